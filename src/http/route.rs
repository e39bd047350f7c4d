//! One route of the server: a method, a path template and its handler.
//!
//! The router, the request metrics' `route` labels and the check that the OpenAPI document
//! describes every route are all built from one list of these, one entry per operation.

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter, on};

use crate::app::AppState;

pub struct Route {
    pub method: Method,
    /// The template, in axum's (and OpenAPI's) `{param}` form.
    pub path: String,
    pub handler: MethodRouter<AppState>,
}

macro_rules! constructors {
    ($($name:ident => $method:ident),+ $(,)?) => {
        impl Route {
            $(
                pub fn $name<H, T>(path: impl Into<String>, handler: H) -> Route
                where
                    H: Handler<T, AppState>,
                    T: 'static,
                {
                    Route {
                        method: Method::$method,
                        path: path.into(),
                        handler: on(MethodFilter::$method, handler),
                    }
                }
            )+
        }
    };
}

constructors!(get => GET, put => PUT, post => POST, patch => PATCH, delete => DELETE);

impl Route {
    /// The same operation under `prefix`, e.g. `/api/v1`.
    pub fn nested(self, prefix: &str) -> Route {
        Route {
            path: format!("{prefix}{}", self.path),
            ..self
        }
    }
}

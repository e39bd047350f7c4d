//! Column encodings that differ between the backends, and the row reading shared by both.

use std::fmt::Write;
use std::str::FromStr;

use confab_signaling::OpaqueId;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgRow, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteArgumentValue, SqliteRow, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Postgres, Row, Sqlite, Type};
use time::OffsetDateTime;
use uuid::Uuid;

use super::StoreError;

/// A point in time as a column: `TIMESTAMPTZ` in PostgreSQL, INTEGER unix milliseconds in
/// SQLite, where numbers compare and sort correctly and sqlx's own text format would not
/// (its fraction has a variable width). Sub-millisecond precision is dropped in SQLite; the
/// callers already truncate to milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct DbTime(pub(crate) OffsetDateTime);

impl DbTime {
    fn unix_ms(self) -> i64 {
        // The range of OffsetDateTime (±9999 years) fits in i64 milliseconds.
        self.0.unix_timestamp_nanos().div_euclid(1_000_000) as i64
    }

    fn from_unix_ms(ms: i64) -> Result<Self, BoxDynError> {
        Ok(DbTime(OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(ms) * 1_000_000,
        )?))
    }
}

impl Type<Sqlite> for DbTime {
    fn type_info() -> SqliteTypeInfo {
        <i64 as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <i64 as Type<Sqlite>>::compatible(ty)
    }
}

impl<'q> Encode<'q, Sqlite> for DbTime {
    fn encode_by_ref(&self, buf: &mut Vec<SqliteArgumentValue<'q>>) -> Result<IsNull, BoxDynError> {
        <i64 as Encode<'q, Sqlite>>::encode(self.unix_ms(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for DbTime {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        DbTime::from_unix_ms(<i64 as Decode<'r, Sqlite>>::decode(value)?)
    }
}

impl Type<Postgres> for DbTime {
    fn type_info() -> PgTypeInfo {
        <OffsetDateTime as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <OffsetDateTime as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for DbTime {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <OffsetDateTime as Encode<Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for DbTime {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        <OffsetDateTime as Decode<'r, Postgres>>::decode(value).map(DbTime)
    }
}

/// A call id as a column: native `UUID` in PostgreSQL, hyphenated lower-case text in SQLite
/// (readable in the `sqlite3` shell, and its order matches the UUID's byte order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DbUuid(pub(crate) Uuid);

impl Type<Sqlite> for DbUuid {
    fn type_info() -> SqliteTypeInfo {
        <str as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <str as Type<Sqlite>>::compatible(ty)
    }
}

impl<'q> Encode<'q, Sqlite> for DbUuid {
    fn encode_by_ref(&self, buf: &mut Vec<SqliteArgumentValue<'q>>) -> Result<IsNull, BoxDynError> {
        <String as Encode<'q, Sqlite>>::encode(self.0.hyphenated().to_string(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for DbUuid {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(DbUuid(Uuid::try_parse(
            <&str as Decode<'r, Sqlite>>::decode(value)?,
        )?))
    }
}

impl Type<Postgres> for DbUuid {
    fn type_info() -> PgTypeInfo {
        <Uuid as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <Uuid as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for DbUuid {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <Uuid as Encode<Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for DbUuid {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        <Uuid as Decode<'r, Postgres>>::decode(value).map(DbUuid)
    }
}

/// A Rust type that both drivers can read from a column.
pub(crate) trait Column:
    for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}

impl<T> Column for T where
    T: for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}

/// A result row of either backend, so that turning rows into domain values is written once
/// instead of once per driver.
pub(crate) trait StoreRow {
    fn col<T: Column>(&self, name: &str) -> Result<T, StoreError>;

    fn time(&self, name: &str) -> Result<OffsetDateTime, StoreError> {
        Ok(self.col::<DbTime>(name)?.0)
    }

    fn opt_time(&self, name: &str) -> Result<Option<OffsetDateTime>, StoreError> {
        Ok(self.col::<Option<DbTime>>(name)?.map(|t| t.0))
    }

    fn uuid(&self, name: &str) -> Result<Uuid, StoreError> {
        Ok(self.col::<DbUuid>(name)?.0)
    }

    /// A user or conversation id, validated again: the database is outside our control.
    fn id(&self, name: &'static str) -> Result<OpaqueId, StoreError> {
        let value: String = self.col(name)?;
        parse_id(name, value)
    }

    fn opt_id(&self, name: &'static str) -> Result<Option<OpaqueId>, StoreError> {
        self.col::<Option<String>>(name)?
            .map(|value| parse_id(name, value))
            .transpose()
    }

    /// An enum stored under its wire name.
    fn wire<E: FromStr>(&self, name: &'static str) -> Result<E, StoreError> {
        let value: String = self.col(name)?;
        parse_wire(name, value)
    }

    fn opt_wire<E: FromStr>(&self, name: &'static str) -> Result<Option<E>, StoreError> {
        self.col::<Option<String>>(name)?
            .map(|value| parse_wire(name, value))
            .transpose()
    }
}

impl StoreRow for SqliteRow {
    fn col<T: Column>(&self, name: &str) -> Result<T, StoreError> {
        Ok(self.try_get(name)?)
    }
}

impl StoreRow for PgRow {
    fn col<T: Column>(&self, name: &str) -> Result<T, StoreError> {
        Ok(self.try_get(name)?)
    }
}

fn parse_id(column: &'static str, value: String) -> Result<OpaqueId, StoreError> {
    OpaqueId::parse(&value).map_err(|_| StoreError::Corrupt { column, value })
}

fn parse_wire<E: FromStr>(column: &'static str, value: String) -> Result<E, StoreError> {
    value
        .parse()
        .map_err(|_| StoreError::Corrupt { column, value })
}

/// Placeholders for a multi-row `VALUES` list: `($1, $2), ($3, $4)` for 2 rows of 2 columns.
/// Numbered placeholders keep the text identical for both backends.
pub(crate) fn values_list(rows: usize, columns: usize) -> String {
    let mut text = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        if row > 0 {
            text.push_str(", ");
        }
        text.push('(');
        for column in 0..columns {
            if column > 0 {
                text.push_str(", ");
            }
            // Writing to a String cannot fail.
            let _ = write!(text, "${}", row * columns + column + 1);
        }
        text.push(')');
    }
    text
}

/// Rows per multi-row INSERT: far below either backend's bind-parameter limit (32766 in
/// SQLite, 65535 in PostgreSQL) for every table here, and large enough that a batch of
/// samples costs a handful of round trips.
pub(crate) const ROWS_PER_INSERT: usize = 200;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_list_numbers_placeholders_row_by_row() {
        assert_eq!(values_list(1, 1), "($1)");
        assert_eq!(values_list(2, 3), "($1, $2, $3), ($4, $5, $6)");
    }

    #[test]
    fn unix_ms_round_trips_before_and_after_the_epoch() {
        for ms in [0, 1, -1, 1_764_000_000_123, -86_400_001] {
            let time = DbTime::from_unix_ms(ms).map_err(|e| e.to_string());
            assert_eq!(time.map(DbTime::unix_ms), Ok(ms));
        }
    }
}

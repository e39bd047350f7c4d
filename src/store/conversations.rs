//! Conversations: who may call whom. The host application owns them and pushes them in.

use confab_signaling::Conversation;
use time::OffsetDateTime;

use super::types::{DbTime, ROWS_PER_INSERT, StoreRow, values_list};
use super::{Store, StoreError, with_pool};

impl Store {
    /// Creates the conversation, or replaces its name and members, in one transaction.
    /// Repeated members are stored once.
    pub async fn put_conversation(
        &self,
        c: &Conversation,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO conversations (id, name, created_at, updated_at) \
                 VALUES ($1, $2, $3, $3) \
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
                 updated_at = excluded.updated_at",
            )
            .bind(c.id.as_str())
            .bind(c.name.as_deref())
            .bind(DbTime(now))
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM conversation_members WHERE conversation_id = $1")
                .bind(c.id.as_str())
                .execute(&mut *tx)
                .await?;
            for chunk in c.members.chunks(ROWS_PER_INSERT) {
                let text = format!(
                    "INSERT INTO conversation_members (conversation_id, user_id) VALUES {} \
                     ON CONFLICT DO NOTHING",
                    values_list(chunk.len(), 2)
                );
                let mut insert = sqlx::query(&text).persistent(false);
                for member in chunk {
                    insert = insert.bind(c.id.as_str()).bind(member.as_str());
                }
                insert.execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The conversation with its members sorted by id (sorted here rather than in SQL, where
    /// the order would depend on the PostgreSQL collation).
    pub async fn get_conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        with_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT c.id, c.name, m.user_id FROM conversations c \
                 LEFT JOIN conversation_members m ON m.conversation_id = c.id \
                 WHERE c.id = $1",
            )
            .bind(id)
            .fetch_all(pool)
            .await?;
            let Some(first) = rows.first() else {
                return Ok(None);
            };
            let mut conversation = Conversation {
                id: first.id("id")?,
                name: first.col("name")?,
                members: Vec::with_capacity(rows.len()),
            };
            for row in &rows {
                if let Some(member) = row.opt_id("user_id")? {
                    conversation.members.push(member);
                }
            }
            conversation.members.sort();
            Ok(Some(conversation))
        })
    }

    /// Deletes the conversation and its members; calls made in it stay in the history.
    /// Returns whether it existed.
    pub async fn delete_conversation(&self, id: &str) -> Result<bool, StoreError> {
        with_pool!(self, pool => {
            let result = sqlx::query("DELETE FROM conversations WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await?;
            Ok(result.rows_affected() > 0)
        })
    }
}

//! The backend-independent half of the document, invoice and token stores: every statement has one
//! text (in [`sql`], `$N` parameters, which SQLite and PostgreSQL both read) and one body of Rust
//! around it ([`document_stores!`], expanded once per backend over that backend's sqlx types).
//!
//! A backend provides only what its dialect does differently:
//! - `begin_write()`: its write transaction (SQLite `BEGIN IMMEDIATE`, so a reader never upgrades
//!   to a writer mid-transaction; PostgreSQL a plain `BEGIN`);
//! - `insert_draft_invoices(env, rows)`: many rows in one statement (SQLite chunked multi-row
//!   `VALUES`, PostgreSQL `UNNEST` of arrays);
//! - its job lock (`JobLock`), which has nothing in common between the two.
//!
//! `archived` is `INTEGER` 0/1 on SQLite and `BOOLEAN` on PostgreSQL; both bind and decode a Rust
//! `bool`, and `NOT archived` reads the same in both.

/// Statements with one meaning and one text on both backends.
pub mod sql {
    pub const INSERT_DOC: &str =
        "INSERT INTO documents (env, kind, id, parent_id, unique_key, created_ms, body)
         VALUES ($1, $2, $3, $4, $5, $6, $7)";
    pub const GET_DOC: &str = "SELECT * FROM documents WHERE env = $1 AND kind = $2 AND id = $3";
    /// A versioned update: changes nothing unless the stored version is the one read.
    pub const UPDATE_DOC: &str =
        "UPDATE documents SET body = $1, archived = $2, version = version + 1
         WHERE env = $3 AND kind = $4 AND id = $5 AND version = $6";
    /// A versioned update of a document's body alone (`$3` is its kind).
    pub const UPDATE_DOC_BODY: &str = "UPDATE documents SET body = $1, version = version + 1
         WHERE env = $2 AND kind = $3 AND id = $4 AND version = $5";
    pub const IS_CUSTOMER_ID: &str =
        "SELECT seq FROM documents WHERE env = $1 AND kind = 'customer' AND id = $2";
    pub const CUSTOMER_BY_ALIAS: &str =
        "SELECT customer_id FROM customer_aliases WHERE env = $1 AND alias = $2";
    pub const INSERT_ALIAS: &str =
        "INSERT INTO customer_aliases (env, alias, customer_id) VALUES ($1, $2, $3)";
    pub const DELETE_CUSTOMER_ALIASES: &str =
        "DELETE FROM customer_aliases WHERE env = $1 AND customer_id = $2";
    pub const DELETE_CARD_ALIASES: &str =
        "DELETE FROM rate_card_aliases WHERE env = $1 AND rate_card_id = $2";
    pub const INSERT_CARD_ALIAS: &str =
        "INSERT INTO rate_card_aliases (env, alias, rate_card_id) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING";
    pub const CARDS_BY_ALIAS: &str =
        "SELECT rate_card_id FROM rate_card_aliases WHERE env = $1 AND alias = $2";

    pub const INSERT_INVOICE: &str = "INSERT INTO invoices
             (env, id, contract_id, customer_id, period_start_ms, period_end_ms, status, body, kind,
              revision, regenerated_from)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING";
    /// Moves an invoice from one status to another; changes nothing from any other status.
    pub const TRANSITION_INVOICE: &str =
        "UPDATE invoices SET status = $1, body = $2 WHERE env = $3 AND id = $4 AND status = $5";
    pub const CONTRACT_INVOICES: &str = "SELECT * FROM invoices WHERE env = $1 AND contract_id = $2
         ORDER BY period_start_ms, revision";
    pub const INVOICE: &str = "SELECT * FROM invoices WHERE env = $1 AND id = $2";

    pub const RECORD_JOB_FAILURE: &str = "INSERT INTO job_failures
             (env, contract_id, error, first_failed_ms, last_failed_ms, failures)
         VALUES ($1, $2, $3, $4, $5, 1)
         ON CONFLICT (env, contract_id) DO UPDATE SET error = excluded.error,
             last_failed_ms = excluded.last_failed_ms, failures = job_failures.failures + 1";
    pub const CLEAR_JOB_FAILURE: &str =
        "DELETE FROM job_failures WHERE env = $1 AND contract_id = $2";
    pub const JOB_FAILURES: &str = "SELECT * FROM job_failures WHERE env = $1
         ORDER BY first_failed_ms, contract_id LIMIT $2";

    /// Claims an Idempotency-Key for a request, in the transaction of its first write.
    pub const CLAIM_KEY: &str =
        "INSERT INTO idempotency_keys (env, key, fingerprint, nonce, created_ms)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";
    pub const KEY_NONCE: &str = "SELECT nonce FROM idempotency_keys WHERE env = $1 AND key = $2";
    pub const IDEMPOTENCY_RECORD: &str =
        "SELECT fingerprint, nonce, created_ms, status, body FROM idempotency_keys
         WHERE env = $1 AND key = $2";
    /// The response of a request: on its own claim, or a new row when it wrote nothing.
    pub const COMPLETE_IDEMPOTENCY: &str = "INSERT INTO idempotency_keys
             (env, key, fingerprint, nonce, created_ms, status, body, completed_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (env, key) DO UPDATE SET status = excluded.status, body = excluded.body,
             completed_ms = excluded.completed_ms
         WHERE idempotency_keys.nonce = excluded.nonce AND idempotency_keys.status IS NULL";
    pub const PRUNE_IDEMPOTENCY: &str = "DELETE FROM idempotency_keys WHERE created_ms < $1";

    /// A ledger entry; an invoice's entry that is already there is left as it is.
    pub const INSERT_LEDGER: &str = "INSERT INTO balance_ledger
             (env, id, customer_id, balance_id, segment_id, entry, amount, timestamp_ms,
              invoice_id, contract_id, reason, created_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING";
    pub const CUSTOMER_LEDGER: &str = "SELECT * FROM balance_ledger
         WHERE env = $1 AND customer_id = $2 ORDER BY timestamp_ms, created_ms, id";

    /// An outbox message; one already there (same id) is left as it is.
    pub const INSERT_OUTBOX: &str = "INSERT INTO outbox
             (id, env, topic, kind, destination, payload, next_attempt_ms, created_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING";
    /// Whether any message is due (a read, so an idle deliverer takes no write lock).
    pub const OUTBOX_DUE: &str = "SELECT id FROM outbox
         WHERE delivered_ms IS NULL AND failed_ms IS NULL AND next_attempt_ms <= $1
           AND (lease_until_ms IS NULL OR lease_until_ms <= $1) LIMIT 1";
    pub const OUTBOX_DELIVERED: &str = "UPDATE outbox
         SET delivered_ms = $1, lease_owner = NULL, lease_until_ms = NULL
         WHERE id = $2 AND delivered_ms IS NULL";
    pub const OUTBOX_RETRY: &str = "UPDATE outbox
         SET last_error = $1, next_attempt_ms = $2, lease_owner = NULL, lease_until_ms = NULL
         WHERE id = $3 AND lease_owner = $4 AND delivered_ms IS NULL";
    pub const OUTBOX_GIVE_UP: &str = "UPDATE outbox
         SET last_error = $1, failed_ms = $2, lease_owner = NULL, lease_until_ms = NULL
         WHERE id = $3 AND lease_owner = $4 AND delivered_ms IS NULL";
    pub const OUTBOX_FOR_DESTINATION: &str = "SELECT * FROM outbox
         WHERE env = $1 AND destination = $2 AND (created_ms > $3 OR (created_ms = $3 AND id > $4))
         ORDER BY created_ms, id LIMIT $5";
    pub const PRUNE_OUTBOX: &str = "DELETE FROM outbox WHERE created_ms < $1
         AND (delivered_ms IS NOT NULL OR failed_ms IS NOT NULL)";
    pub const SET_WEBHOOK_SECRET: &str =
        "INSERT INTO webhook_secrets (env, secret, updated_ms) VALUES ($1, $2, $3)
         ON CONFLICT (env) DO UPDATE SET secret = excluded.secret, updated_ms = excluded.updated_ms";
    pub const WEBHOOK_SECRET: &str = "SELECT secret FROM webhook_secrets WHERE env = $1";

    /// A Stripe push, QUEUED; one already there (same invoice) is left as it is.
    pub const INSERT_STRIPE_PUSH: &str = "INSERT INTO stripe_pushes
             (env, invoice_id, customer_id, stripe_customer_id, status, created_ms, updated_ms)
         VALUES ($1, $2, $3, $4, 'QUEUED', $5, $5) ON CONFLICT DO NOTHING";
    pub const STRIPE_PUSH: &str = "SELECT * FROM stripe_pushes WHERE env = $1 AND invoice_id = $2";
    pub const STRIPE_PUSH_ITEMS: &str = "SELECT line_index, stripe_item_id FROM stripe_push_items
         WHERE env = $1 AND invoice_id = $2 ORDER BY line_index";
    pub const CUSTOMER_STRIPE_PUSHES: &str =
        "SELECT * FROM stripe_pushes WHERE env = $1 AND customer_id = $2";
    /// The Stripe invoice of a push, unless one is recorded already.
    pub const RECORD_STRIPE_INVOICE: &str = "UPDATE stripe_pushes
         SET stripe_invoice_id = $1, updated_ms = $2
         WHERE env = $3 AND invoice_id = $4 AND stripe_invoice_id IS NULL";
    pub const INSERT_STRIPE_ITEM: &str = "INSERT INTO stripe_push_items
             (env, invoice_id, line_index, stripe_item_id, amount, created_ms)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING";
    pub const SET_STRIPE_STATUS: &str = "UPDATE stripe_pushes
         SET status = $1, error = $2, updated_ms = $3 WHERE env = $4 AND invoice_id = $5";

    /// A first alert state; one already there (another evaluator's) is left as it is.
    pub const INSERT_ALERT_STATE: &str = "INSERT INTO alert_states
             (env, alert_id, customer_id, status, fires, value, triggered_by, version, updated_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8) ON CONFLICT DO NOTHING";
    /// A compare-and-set of an alert state on the version read.
    pub const UPDATE_ALERT_STATE: &str = "UPDATE alert_states
         SET status = $1, fires = $2, value = $3, triggered_by = $4, version = version + 1,
             updated_ms = $5
         WHERE env = $6 AND alert_id = $7 AND customer_id = $8 AND version = $9";
    pub const RESET_ALERT_STATE: &str = "UPDATE alert_states
         SET status = 'evaluating', version = version + 1, updated_ms = $1
         WHERE env = $2 AND alert_id = $3 AND customer_id = $4";
    pub const CUSTOMER_ALERT_STATES: &str =
        "SELECT * FROM alert_states WHERE env = $1 AND customer_id = $2 ORDER BY alert_id";
    pub const ALERT_STATE: &str =
        "SELECT * FROM alert_states WHERE env = $1 AND alert_id = $2 AND customer_id = $3";

    pub const INSERT_TOKEN: &str =
        "INSERT INTO tokens (hash, env, name, created_ms) VALUES ($1, $2, $3, $4)";
    pub const TOKEN_ENV: &str = "SELECT env FROM tokens WHERE hash = $1 AND revoked_ms IS NULL";
    pub const TOKEN_COUNT: &str = "SELECT COUNT(*) FROM tokens";
    pub const LIST_TOKENS: &str =
        "SELECT substr(hash, 1, 16) AS id, name, env, created_ms, last_used_ms, revoked_ms
         FROM tokens ORDER BY created_ms, hash";
    pub const REVOKE_TOKEN: &str = "UPDATE tokens SET revoked_ms = $1
         WHERE substr(hash, 1, 16) = $2 AND revoked_ms IS NULL";
    pub const TOUCH_TOKEN: &str = "UPDATE tokens SET last_used_ms = $1
         WHERE hash = $2 AND (last_used_ms IS NULL OR last_used_ms < $1)";
}

/// Expands the `ConfigStore`, `InvoiceStore`, `TokenStore`, `Health` and `UnitOfWork` implementations for
/// one backend: `document_stores!(Store, Work, Database, Row, Connection)`, where `Store` has
/// `pool`, `begin_write()` and `insert_draft_invoices()`, and `Work` is the unit of work's
/// transaction newtype. Expanded inside the backend module (its `use super::*` brings the store
/// types into scope).
macro_rules! document_stores {
    ($store:ident, $work:ident, $db:ty, $row:ty, $conn:ty) => {
        use $crate::store::documents::sql;

        fn is_unique_violation(e: &sqlx::Error) -> bool {
            matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
        }

        /// A write transaction that first records the request's Idempotency-Key claim, if it
        /// has one: the key commits with the write, or neither does.
        async fn write_tx(store: &$store) -> StoreResult<sqlx::Transaction<'static, $db>> {
            let mut tx = store.begin_write().await?;
            if let Some(claim) = current_claim() {
                record_claim(&mut tx, &claim).await?;
            }
            Ok(tx)
        }

        async fn record_claim(conn: &mut $conn, c: &IdempotencyClaim) -> StoreResult<()> {
            let inserted = sqlx::query(sql::CLAIM_KEY)
                .bind(c.env.as_str())
                .bind(&c.key)
                .bind(&c.fingerprint)
                .bind(&c.nonce)
                .bind(c.now_ms)
                .execute(&mut *conn)
                .await?;
            if inserted.rows_affected() == 1 {
                return Ok(());
            }
            let nonce: Option<String> = sqlx::query_scalar(sql::KEY_NONCE)
                .bind(c.env.as_str())
                .bind(&c.key)
                .fetch_optional(&mut *conn)
                .await?;
            match nonce {
                Some(n) if n == c.nonce => Ok(()),
                _ => Err(StoreError::Conflict(
                    "another request with this Idempotency-Key is being processed".into(),
                )),
            }
        }

        fn doc_from_row(row: &$row) -> Doc {
            Doc {
                seq: row.get("seq"),
                id: row.get("id"),
                parent_id: row.get("parent_id"),
                archived: row.get("archived"),
                created_ms: row.get("created_ms"),
                body: row.get("body"),
                version: row.get("version"),
            }
        }

        fn invoice_from_row(row: &$row) -> StoreResult<InvoiceRow> {
            let status: String = row.get("status");
            let kind: String = row.get("kind");
            Ok(InvoiceRow {
                id: row.get("id"),
                kind: match kind.as_str() {
                    "SCHEDULED" => InvoiceKind::Scheduled,
                    "USAGE" => InvoiceKind::Usage,
                    _ => return Err(StoreError::Corrupt(format!("invoice kind {kind}"))),
                },
                contract_id: row.get("contract_id"),
                customer_id: row.get("customer_id"),
                period_start_ms: row.get("period_start_ms"),
                period_end_ms: row.get("period_end_ms"),
                status: InvoiceStatus::parse(&status).ok_or(StoreError::Corrupt(status))?,
                body: row.get("body"),
                revision: row.get("revision"),
                regenerated_from: row.get("regenerated_from"),
            })
        }

        fn ledger_from_row(row: &$row) -> StoreResult<LedgerRow> {
            let entry: String = row.get("entry");
            let amount: String = row.get("amount");
            Ok(LedgerRow {
                id: row.get("id"),
                customer_id: row.get("customer_id"),
                balance_id: row.get("balance_id"),
                segment_id: row.get("segment_id"),
                entry: LedgerRow::parse_entry(&entry)
                    .ok_or_else(|| StoreError::Corrupt(format!("ledger entry kind {entry}")))?,
                amount: amount
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("ledger amount {amount}")))?,
                timestamp_ms: row.get("timestamp_ms"),
                invoice_id: row.get("invoice_id"),
                contract_id: row.get("contract_id"),
                reason: row.get("reason"),
                created_ms: row.get("created_ms"),
            })
        }

        async fn insert_ledger(conn: &mut $conn, env: Env, e: &LedgerRow) -> StoreResult<()> {
            sqlx::query(sql::INSERT_LEDGER)
                .bind(env.as_str())
                .bind(&e.id)
                .bind(&e.customer_id)
                .bind(&e.balance_id)
                .bind(&e.segment_id)
                .bind(LedgerRow::entry_name(e.entry))
                .bind(e.amount.to_string())
                .bind(e.timestamp_ms)
                .bind(&e.invoice_id)
                .bind(&e.contract_id)
                .bind(&e.reason)
                .bind(e.created_ms)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }

        async fn insert_doc(conn: &mut $conn, env: Env, doc: &NewDoc<'_>) -> StoreResult<()> {
            sqlx::query(sql::INSERT_DOC)
                .bind(env.as_str())
                .bind(doc.kind)
                .bind(doc.id)
                .bind(doc.parent_id)
                .bind(doc.unique_key)
                .bind(doc.created_ms)
                .bind(&doc.body)
                .execute(conn)
                .await
                .map_err(|e| match is_unique_violation(&e) {
                    true => {
                        StoreError::Conflict(format!("{} {} already exists", doc.kind, doc.id))
                    }
                    false => e.into(),
                })?;
            Ok(())
        }

        /// A versioned update of `kind` `id`'s body in `conn`'s transaction; false when stale.
        async fn update_body(
            conn: &mut $conn,
            env: Env,
            kind: &str,
            id: &str,
            body: &str,
            version: i64,
        ) -> StoreResult<bool> {
            let done = sqlx::query(sql::UPDATE_DOC_BODY)
                .bind(body)
                .bind(env.as_str())
                .bind(kind)
                .bind(id)
                .bind(version)
                .execute(conn)
                .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn insert_aliases(
            conn: &mut $conn,
            env: Env,
            customer_id: &str,
            aliases: &[String],
        ) -> StoreResult<()> {
            for alias in aliases {
                // Customer ids are never deleted, so this check cannot be raced into a wrong answer.
                let is_id: Option<i64> = sqlx::query_scalar(sql::IS_CUSTOMER_ID)
                    .bind(env.as_str())
                    .bind(alias)
                    .fetch_optional(&mut *conn)
                    .await?;
                if is_id.is_some() {
                    return Err(StoreError::Conflict(format!(
                        "ingest alias {alias:?} is a customer's id"
                    )));
                }
                sqlx::query(sql::INSERT_ALIAS)
                    .bind(env.as_str())
                    .bind(alias)
                    .bind(customer_id)
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| match is_unique_violation(&e) {
                        true => StoreError::Conflict(format!(
                            "ingest alias {alias:?} is already in use"
                        )),
                        false => e.into(),
                    })?;
            }
            Ok(())
        }

        async fn index_card_aliases(
            conn: &mut $conn,
            env: Env,
            card_id: &str,
            aliases: &[String],
        ) -> StoreResult<()> {
            sqlx::query(sql::DELETE_CARD_ALIASES)
                .bind(env.as_str())
                .bind(card_id)
                .execute(&mut *conn)
                .await?;
            for alias in aliases {
                sqlx::query(sql::INSERT_CARD_ALIAS)
                    .bind(env.as_str())
                    .bind(alias)
                    .bind(card_id)
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(())
        }

        #[async_trait]
        impl ConfigStore for $store {
            async fn insert_docs(&self, env: Env, docs: &[NewDoc<'_>]) -> StoreResult<()> {
                let mut tx = write_tx(self).await?;
                for doc in docs {
                    insert_doc(&mut tx, env, doc).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn get_doc(&self, env: Env, kind: &str, id: &str) -> StoreResult<Option<Doc>> {
                let row = sqlx::query(sql::GET_DOC)
                    .bind(env.as_str())
                    .bind(kind)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.as_ref().map(doc_from_row))
            }

            async fn update_doc(
                &self,
                env: Env,
                kind: &str,
                id: &str,
                body: &str,
                archived: bool,
                version: i64,
            ) -> StoreResult<bool> {
                let mut tx = write_tx(self).await?;
                let done = sqlx::query(sql::UPDATE_DOC)
                    .bind(body)
                    .bind(archived)
                    .bind(env.as_str())
                    .bind(kind)
                    .bind(id)
                    .bind(version)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() != 1 {
                    return Ok(false); // stale: rolled back, the claim with it
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn list_docs(
                &self,
                env: Env,
                kind: &str,
                parent_id: Option<&str>,
                filter: ArchiveFilter,
                page: Option<PageReq>,
            ) -> StoreResult<Vec<Doc>> {
                let mut q = QueryBuilder::<$db>::new("SELECT * FROM documents WHERE env = ");
                q.push_bind(env.as_str())
                    .push(" AND kind = ")
                    .push_bind(kind);
                if let Some(parent) = parent_id {
                    q.push(" AND parent_id = ").push_bind(parent);
                }
                match filter {
                    ArchiveFilter::Active => q.push(" AND NOT archived"),
                    ArchiveFilter::Archived => q.push(" AND archived"),
                    ArchiveFilter::All => &mut q,
                };
                if let Some(p) = page {
                    q.push(" AND seq > ").push_bind(p.after);
                }
                q.push(" ORDER BY seq");
                if let Some(p) = page {
                    q.push(" LIMIT ").push_bind(p.limit);
                }
                let rows = q.build().fetch_all(&self.pool).await?;
                Ok(rows.iter().map(doc_from_row).collect())
            }

            async fn insert_customer(
                &self,
                env: Env,
                doc: NewDoc<'_>,
                aliases: &[String],
            ) -> StoreResult<()> {
                let mut tx = write_tx(self).await?;
                let taken: Option<String> = sqlx::query_scalar(sql::CUSTOMER_BY_ALIAS)
                    .bind(env.as_str())
                    .bind(doc.id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if taken.is_some() {
                    return Err(StoreError::Conflict(format!(
                        "customer id {:?} is another customer's ingest alias",
                        doc.id
                    )));
                }
                insert_doc(&mut tx, env, &doc).await?;
                insert_aliases(&mut tx, env, doc.id, aliases).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn set_customer_aliases(
                &self,
                env: Env,
                id: &str,
                aliases: &[String],
                body: &str,
                version: i64,
            ) -> StoreResult<bool> {
                let mut tx = write_tx(self).await?;
                // The document first: its row lock orders concurrent changes of one customer,
                // and a stale version stops here having changed nothing.
                if !update_body(&mut tx, env, "customer", id, body, version).await? {
                    return Ok(false);
                }
                sqlx::query(sql::DELETE_CUSTOMER_ALIASES)
                    .bind(env.as_str())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                insert_aliases(&mut tx, env, id, aliases).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn insert_rate_card(
                &self,
                env: Env,
                doc: NewDoc<'_>,
                aliases: &[String],
            ) -> StoreResult<()> {
                let mut tx = write_tx(self).await?;
                insert_doc(&mut tx, env, &doc).await?;
                index_card_aliases(&mut tx, env, doc.id, aliases).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn update_rate_card(
                &self,
                env: Env,
                id: &str,
                body: &str,
                version: i64,
                aliases: &[String],
            ) -> StoreResult<bool> {
                let mut tx = write_tx(self).await?;
                if !update_body(&mut tx, env, "rate_card", id, body, version).await? {
                    return Ok(false);
                }
                index_card_aliases(&mut tx, env, id, aliases).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn rate_cards_by_alias(
                &self,
                env: Env,
                alias: &str,
            ) -> StoreResult<Vec<String>> {
                Ok(sqlx::query_scalar(sql::CARDS_BY_ALIAS)
                    .bind(env.as_str())
                    .bind(alias)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn metrics_version(&self) -> StoreResult<u64> {
                let v: i64 = sqlx::query_scalar(super::usage::sql::METRICS_VERSION)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(u64::try_from(v).unwrap_or(0))
            }

            async fn customer_by_alias(
                &self,
                env: Env,
                alias: &str,
            ) -> StoreResult<Option<String>> {
                Ok(sqlx::query_scalar(sql::CUSTOMER_BY_ALIAS)
                    .bind(env.as_str())
                    .bind(alias)
                    .fetch_optional(&self.pool)
                    .await?)
            }
        }

        /// [`UnitOfWork`] over one write transaction.
        struct $work(sqlx::Transaction<'static, $db>);

        #[async_trait]
        impl UnitOfWork for $work {
            async fn insert_invoice(&mut self, env: Env, row: &InvoiceRow) -> StoreResult<bool> {
                let inserted = sqlx::query(sql::INSERT_INVOICE)
                    .bind(env.as_str())
                    .bind(&row.id)
                    .bind(&row.contract_id)
                    .bind(&row.customer_id)
                    .bind(row.period_start_ms)
                    .bind(row.period_end_ms)
                    .bind(row.status.as_str())
                    .bind(&row.body)
                    .bind(match row.kind {
                        InvoiceKind::Usage => "USAGE",
                        InvoiceKind::Scheduled => "SCHEDULED",
                    })
                    .bind(row.revision)
                    .bind(&row.regenerated_from)
                    .execute(&mut *self.0)
                    .await?;
                Ok(inserted.rows_affected() == 1)
            }

            async fn put_invoice(
                &mut self,
                env: Env,
                row: &InvoiceRow,
                from: InvoiceStatus,
            ) -> StoreResult<bool> {
                if self.insert_invoice(env, row).await? {
                    return Ok(true);
                }
                let moved = sqlx::query(sql::TRANSITION_INVOICE)
                    .bind(row.status.as_str())
                    .bind(&row.body)
                    .bind(env.as_str())
                    .bind(&row.id)
                    .bind(from.as_str())
                    .execute(&mut *self.0)
                    .await?;
                Ok(moved.rows_affected() == 1)
            }

            async fn put_ledger_entries(
                &mut self,
                env: Env,
                entries: &[LedgerRow],
            ) -> StoreResult<()> {
                for e in entries {
                    insert_ledger(&mut self.0, env, e).await?;
                }
                Ok(())
            }

            async fn put_outbox(&mut self, m: &NewOutboxMessage) -> StoreResult<()> {
                sqlx::query(sql::INSERT_OUTBOX)
                    .bind(&m.id)
                    .bind(m.env.as_str())
                    .bind(&m.topic)
                    .bind(&m.kind)
                    .bind(&m.destination)
                    .bind(&m.payload)
                    .bind(m.created_ms)
                    .bind(m.created_ms)
                    .execute(&mut *self.0)
                    .await?;
                Ok(())
            }

            async fn put_stripe_push(&mut self, env: Env, p: &NewStripePush) -> StoreResult<()> {
                sqlx::query(sql::INSERT_STRIPE_PUSH)
                    .bind(env.as_str())
                    .bind(&p.invoice_id)
                    .bind(&p.customer_id)
                    .bind(&p.stripe_customer_id)
                    .bind(p.created_ms)
                    .execute(&mut *self.0)
                    .await?;
                Ok(())
            }

            async fn put_alert_state(
                &mut self,
                env: Env,
                a: &AlertState,
                expected: Option<i64>,
            ) -> StoreResult<bool> {
                let done = match expected {
                    None => {
                        sqlx::query(sql::INSERT_ALERT_STATE)
                            .bind(env.as_str())
                            .bind(&a.alert_id)
                            .bind(&a.customer_id)
                            .bind(&a.status)
                            .bind(a.fires)
                            .bind(&a.value)
                            .bind(&a.triggered_by)
                            .bind(a.updated_ms)
                            .execute(&mut *self.0)
                            .await?
                    }
                    Some(version) => {
                        sqlx::query(sql::UPDATE_ALERT_STATE)
                            .bind(&a.status)
                            .bind(a.fires)
                            .bind(&a.value)
                            .bind(&a.triggered_by)
                            .bind(a.updated_ms)
                            .bind(env.as_str())
                            .bind(&a.alert_id)
                            .bind(&a.customer_id)
                            .bind(version)
                            .execute(&mut *self.0)
                            .await?
                    }
                };
                Ok(done.rows_affected() == 1)
            }

            async fn commit(self: Box<Self>) -> StoreResult<()> {
                Ok(self.0.commit().await?)
            }
        }

        fn stripe_push_from_row(row: &$row) -> StripePush {
            StripePush {
                invoice_id: row.get("invoice_id"),
                customer_id: row.get("customer_id"),
                stripe_customer_id: row.get("stripe_customer_id"),
                stripe_invoice_id: row.get("stripe_invoice_id"),
                status: row.get("status"),
                error: row.get("error"),
                updated_ms: row.get("updated_ms"),
                items: Vec::new(),
            }
        }

        #[async_trait]
        impl StripeStore for $store {
            async fn stripe_push(
                &self,
                env: Env,
                invoice_id: &str,
            ) -> StoreResult<Option<StripePush>> {
                let row = sqlx::query(sql::STRIPE_PUSH)
                    .bind(env.as_str())
                    .bind(invoice_id)
                    .fetch_optional(&self.pool)
                    .await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let mut push = stripe_push_from_row(&row);
                let items = sqlx::query(sql::STRIPE_PUSH_ITEMS)
                    .bind(env.as_str())
                    .bind(invoice_id)
                    .fetch_all(&self.pool)
                    .await?;
                push.items = items
                    .iter()
                    .map(|r| (r.get("line_index"), r.get("stripe_item_id")))
                    .collect();
                Ok(Some(push))
            }

            async fn customer_stripe_pushes(
                &self,
                env: Env,
                customer_id: &str,
            ) -> StoreResult<Vec<StripePush>> {
                let rows = sqlx::query(sql::CUSTOMER_STRIPE_PUSHES)
                    .bind(env.as_str())
                    .bind(customer_id)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.iter().map(stripe_push_from_row).collect())
            }

            async fn record_stripe_invoice(
                &self,
                env: Env,
                invoice_id: &str,
                stripe_invoice_id: &str,
                now_ms: i64,
            ) -> StoreResult<Option<String>> {
                sqlx::query(sql::RECORD_STRIPE_INVOICE)
                    .bind(stripe_invoice_id)
                    .bind(now_ms)
                    .bind(env.as_str())
                    .bind(invoice_id)
                    .execute(&self.pool)
                    .await?;
                Ok(self
                    .stripe_push(env, invoice_id)
                    .await?
                    .and_then(|p| p.stripe_invoice_id))
            }

            async fn record_stripe_item(
                &self,
                env: Env,
                invoice_id: &str,
                line_index: i64,
                stripe_item_id: &str,
                amount: i64,
                now_ms: i64,
            ) -> StoreResult<()> {
                sqlx::query(sql::INSERT_STRIPE_ITEM)
                    .bind(env.as_str())
                    .bind(invoice_id)
                    .bind(line_index)
                    .bind(stripe_item_id)
                    .bind(amount)
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn set_stripe_status(
                &self,
                env: Env,
                invoice_id: &str,
                status: &str,
                error: Option<&str>,
                now_ms: i64,
            ) -> StoreResult<()> {
                sqlx::query(sql::SET_STRIPE_STATUS)
                    .bind(status)
                    .bind(error)
                    .bind(now_ms)
                    .bind(env.as_str())
                    .bind(invoice_id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }
        }

        fn alert_state_from_row(row: &$row) -> AlertState {
            AlertState {
                alert_id: row.get("alert_id"),
                customer_id: row.get("customer_id"),
                status: row.get("status"),
                fires: row.get("fires"),
                value: row.get("value"),
                triggered_by: row.get("triggered_by"),
                version: row.get("version"),
                updated_ms: row.get("updated_ms"),
            }
        }

        #[async_trait]
        impl AlertStore for $store {
            async fn alert_states(
                &self,
                env: Env,
                customer_id: &str,
            ) -> StoreResult<Vec<AlertState>> {
                let rows = sqlx::query(sql::CUSTOMER_ALERT_STATES)
                    .bind(env.as_str())
                    .bind(customer_id)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.iter().map(alert_state_from_row).collect())
            }

            async fn alert_state(
                &self,
                env: Env,
                alert_id: &str,
                customer_id: &str,
            ) -> StoreResult<Option<AlertState>> {
                let row = sqlx::query(sql::ALERT_STATE)
                    .bind(env.as_str())
                    .bind(alert_id)
                    .bind(customer_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.as_ref().map(alert_state_from_row))
            }

            async fn reset_alert_state(
                &self,
                env: Env,
                alert_id: &str,
                customer_id: &str,
                now_ms: i64,
            ) -> StoreResult<()> {
                let mut tx = write_tx(self).await?;
                sqlx::query(sql::RESET_ALERT_STATE)
                    .bind(now_ms)
                    .bind(env.as_str())
                    .bind(alert_id)
                    .bind(customer_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }
        }

        fn outbox_from_row(row: &$row) -> StoreResult<OutboxMessage> {
            let env: String = row.get("env");
            Ok(OutboxMessage {
                id: row.get("id"),
                env: Env::parse(&env).ok_or(StoreError::Corrupt(env))?,
                topic: row.get("topic"),
                kind: row.get("kind"),
                destination: row.get("destination"),
                payload: row.get("payload"),
                attempts: row.get("attempts"),
                next_attempt_ms: row.get("next_attempt_ms"),
                delivered_ms: row.get("delivered_ms"),
                failed_ms: row.get("failed_ms"),
                last_error: row.get("last_error"),
                created_ms: row.get("created_ms"),
            })
        }

        #[async_trait]
        impl OutboxStore for $store {
            async fn claim_outbox(
                &self,
                owner: &str,
                now_ms: i64,
                lease_until_ms: i64,
                limit: i64,
            ) -> StoreResult<Vec<OutboxMessage>> {
                let due: Option<String> = sqlx::query_scalar(sql::OUTBOX_DUE)
                    .bind(now_ms)
                    .fetch_optional(&self.pool)
                    .await?;
                if due.is_none() {
                    return Ok(Vec::new());
                }
                // The backend's conditional UPDATE (`CLAIM_OUTBOX`): one claimer per message.
                let rows = sqlx::query(CLAIM_OUTBOX)
                    .bind(owner)
                    .bind(lease_until_ms)
                    .bind(now_ms)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(outbox_from_row).collect()
            }

            async fn finish_attempt(
                &self,
                id: &str,
                owner: &str,
                outcome: &AttemptOutcome,
                now_ms: i64,
            ) -> StoreResult<()> {
                let q = match outcome {
                    AttemptOutcome::Delivered => {
                        sqlx::query(sql::OUTBOX_DELIVERED).bind(now_ms).bind(id)
                    }
                    AttemptOutcome::Retry {
                        error,
                        next_attempt_ms,
                    } => sqlx::query(sql::OUTBOX_RETRY)
                        .bind(error.as_str())
                        .bind(*next_attempt_ms)
                        .bind(id)
                        .bind(owner),
                    AttemptOutcome::GiveUp { error } => sqlx::query(sql::OUTBOX_GIVE_UP)
                        .bind(error.as_str())
                        .bind(now_ms)
                        .bind(id)
                        .bind(owner),
                };
                q.execute(&self.pool).await?;
                Ok(())
            }

            async fn outbox_for_destination(
                &self,
                env: Env,
                destination: &str,
                after: Option<(i64, String)>,
                limit: i64,
            ) -> StoreResult<Vec<OutboxMessage>> {
                let (after_ms, after_id) = after.unwrap_or((i64::MIN, String::new()));
                let rows = sqlx::query(sql::OUTBOX_FOR_DESTINATION)
                    .bind(env.as_str())
                    .bind(destination)
                    .bind(after_ms)
                    .bind(after_id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(outbox_from_row).collect()
            }

            async fn prune_outbox(&self, before_ms: i64) -> StoreResult<u64> {
                let done = sqlx::query(sql::PRUNE_OUTBOX)
                    .bind(before_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn set_webhook_secret(
                &self,
                env: Env,
                secret: &str,
                now_ms: i64,
            ) -> StoreResult<()> {
                let mut tx = write_tx(self).await?;
                sqlx::query(sql::SET_WEBHOOK_SECRET)
                    .bind(env.as_str())
                    .bind(secret)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn webhook_secret(&self, env: Env) -> StoreResult<Option<String>> {
                Ok(sqlx::query_scalar(sql::WEBHOOK_SECRET)
                    .bind(env.as_str())
                    .fetch_optional(&self.pool)
                    .await?)
            }
        }

        #[async_trait]
        impl LedgerStore for $store {
            async fn customer_ledger(
                &self,
                env: Env,
                customer_id: &str,
            ) -> StoreResult<Vec<LedgerRow>> {
                let rows = sqlx::query(sql::CUSTOMER_LEDGER)
                    .bind(env.as_str())
                    .bind(customer_id)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(ledger_from_row).collect()
            }

            async fn insert_manual_entry(&self, env: Env, entry: &LedgerRow) -> StoreResult<()> {
                let mut tx = write_tx(self).await?;
                insert_ledger(&mut tx, env, entry).await?;
                tx.commit().await?;
                Ok(())
            }
        }

        #[async_trait]
        impl InvoiceStore for $store {
            async fn ensure_invoices(&self, env: Env, rows: &[InvoiceRow]) -> StoreResult<()> {
                if rows.is_empty() {
                    return Ok(());
                }
                self.insert_draft_invoices(env, rows).await
            }

            async fn invoices_for_contract(
                &self,
                env: Env,
                contract_id: &str,
            ) -> StoreResult<Vec<InvoiceRow>> {
                let rows = sqlx::query(sql::CONTRACT_INVOICES)
                    .bind(env.as_str())
                    .bind(contract_id)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(invoice_from_row).collect()
            }

            async fn invoice(&self, env: Env, id: &str) -> StoreResult<Option<InvoiceRow>> {
                let row = sqlx::query(sql::INVOICE)
                    .bind(env.as_str())
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(invoice_from_row).transpose()
            }

            async fn transition_invoice(
                &self,
                env: Env,
                id: &str,
                from: InvoiceStatus,
                to: InvoiceStatus,
                body: &str,
            ) -> StoreResult<bool> {
                let mut tx = write_tx(self).await?;
                let done = sqlx::query(sql::TRANSITION_INVOICE)
                    .bind(to.as_str())
                    .bind(body)
                    .bind(env.as_str())
                    .bind(id)
                    .bind(from.as_str())
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() != 1 {
                    return Ok(false);
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn begin(&self) -> StoreResult<Box<dyn UnitOfWork>> {
                Ok(Box::new($work(write_tx(self).await?)))
            }

            async fn record_job_failure(
                &self,
                env: Env,
                contract_id: &str,
                error: &str,
                now_ms: i64,
            ) -> StoreResult<()> {
                sqlx::query(sql::RECORD_JOB_FAILURE)
                    .bind(env.as_str())
                    .bind(contract_id)
                    .bind(error)
                    .bind(now_ms)
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn clear_job_failure(&self, env: Env, contract_id: &str) -> StoreResult<()> {
                sqlx::query(sql::CLEAR_JOB_FAILURE)
                    .bind(env.as_str())
                    .bind(contract_id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn job_failures(&self, env: Env, limit: i64) -> StoreResult<Vec<JobFailure>> {
                let rows = sqlx::query(sql::JOB_FAILURES)
                    .bind(env.as_str())
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows
                    .iter()
                    .map(|r: &$row| JobFailure {
                        contract_id: r.get("contract_id"),
                        error: r.get("error"),
                        first_failed_ms: r.get("first_failed_ms"),
                        last_failed_ms: r.get("last_failed_ms"),
                        failures: r.get("failures"),
                    })
                    .collect())
            }
        }

        #[async_trait]
        impl IdempotencyStore for $store {
            async fn idempotency_record(
                &self,
                env: Env,
                key: &str,
            ) -> StoreResult<Option<IdempotencyRecord>> {
                let row = sqlx::query(sql::IDEMPOTENCY_RECORD)
                    .bind(env.as_str())
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|r: $row| {
                    let status: Option<i64> = r.get("status");
                    let body: Option<String> = r.get("body");
                    IdempotencyRecord {
                        fingerprint: r.get("fingerprint"),
                        nonce: r.get("nonce"),
                        created_ms: r.get("created_ms"),
                        response: status
                            .zip(body)
                            .map(|(s, b)| (u16::try_from(s).unwrap_or(500), b)),
                    }
                }))
            }

            async fn complete_idempotency(
                &self,
                claim: &IdempotencyClaim,
                status: u16,
                body: &str,
                now_ms: i64,
            ) -> StoreResult<bool> {
                let done = sqlx::query(sql::COMPLETE_IDEMPOTENCY)
                    .bind(claim.env.as_str())
                    .bind(&claim.key)
                    .bind(&claim.fingerprint)
                    .bind(&claim.nonce)
                    .bind(claim.now_ms)
                    .bind(i64::from(status))
                    .bind(body)
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn prune_idempotency(&self, before_ms: i64) -> StoreResult<u64> {
                let done = sqlx::query(sql::PRUNE_IDEMPOTENCY)
                    .bind(before_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }
        }

        #[async_trait]
        impl Health for $store {
            fn pool_stats(&self) -> PoolStats {
                PoolStats {
                    size: self.pool.size(),
                    idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
                }
            }

            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }
        }

        #[async_trait]
        impl TokenStore for $store {
            async fn insert_token(
                &self,
                hash: &str,
                env: Env,
                name: Option<&str>,
                now_ms: i64,
            ) -> StoreResult<()> {
                sqlx::query(sql::INSERT_TOKEN)
                    .bind(hash)
                    .bind(env.as_str())
                    .bind(name)
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn token_env(&self, hash: &str) -> StoreResult<Option<Env>> {
                let env: Option<String> = sqlx::query_scalar(sql::TOKEN_ENV)
                    .bind(hash)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(env.as_deref().and_then(Env::parse))
            }

            async fn token_count(&self) -> StoreResult<i64> {
                Ok(sqlx::query_scalar(sql::TOKEN_COUNT)
                    .fetch_one(&self.pool)
                    .await?)
            }

            async fn list_tokens(&self) -> StoreResult<Vec<TokenInfo>> {
                let rows = sqlx::query(sql::LIST_TOKENS).fetch_all(&self.pool).await?;
                rows.iter()
                    .map(|r: &$row| {
                        let env: String = r.get("env");
                        Ok(TokenInfo {
                            id: r.get("id"),
                            name: r.get("name"),
                            env: Env::parse(&env).ok_or(StoreError::Corrupt(env))?,
                            created_ms: r.get("created_ms"),
                            last_used_ms: r.get("last_used_ms"),
                            revoked_ms: r.get("revoked_ms"),
                        })
                    })
                    .collect()
            }

            async fn revoke_token(&self, id: &str, now_ms: i64) -> StoreResult<bool> {
                let done = sqlx::query(sql::REVOKE_TOKEN)
                    .bind(now_ms)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn touch_token(&self, hash: &str, now_ms: i64) -> StoreResult<()> {
                sqlx::query(sql::TOUCH_TOKEN)
                    .bind(now_ms)
                    .bind(hash)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }
        }
    };
}

pub(crate) use document_stores;

//! Where the store records the epoch of its newest committed write, which recovery reads after
//! an outage: the one state row of a single server, or this node's own row when several nodes
//! share the database (`cluster = true`), so that their epochs never mix.

/// The row holding this store's epoch and flush counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum EpochRow {
    Single,
    Node(String),
}

impl EpochRow {
    /// `table WHERE condition` naming the row.
    fn row(&self) -> String {
        match self {
            EpochRow::Single => "store_state WHERE id = 1".to_owned(),
            // Names are letters, digits and `._-` (config checks); quotes doubled all the same.
            EpochRow::Node(name) => {
                format!("cluster_nodes WHERE node = '{}'", name.replace('\'', "''"))
            }
        }
    }

    fn table_and_filter(&self) -> (String, String) {
        let row = self.row();
        let (table, filter) = row.split_once(" WHERE ").unwrap_or((&row, "true"));
        (table.to_owned(), filter.to_owned())
    }

    /// Records `epoch` (in the transaction that made it).
    pub(super) fn set(&self, epoch: i64) -> String {
        let (table, filter) = self.table_and_filter();
        format!("UPDATE {table} SET epoch = {epoch} WHERE {filter}")
    }

    /// Records `epoch` unless a later one is recorded (after a rollback).
    pub(super) fn raise(&self, epoch: i64) -> String {
        let (table, filter) = self.table_and_filter();
        format!("UPDATE {table} SET epoch = GREATEST(epoch, {epoch}) WHERE {filter}")
    }

    /// The flusher's write: its synchronous commit flushes every write before it, and it answers
    /// with the newest epoch committed before it.
    pub(super) fn flush(&self) -> String {
        let (table, filter) = self.table_and_filter();
        format!("UPDATE {table} SET flushes = flushes + 1 WHERE {filter} RETURNING epoch")
    }

    /// Reads the recorded epoch.
    pub(super) fn read(&self) -> String {
        let (table, filter) = self.table_and_filter();
        format!("SELECT epoch FROM {table} WHERE {filter}")
    }

    /// Creates the row if missing (a node's first start).
    pub(super) fn ensure(&self) -> Option<String> {
        match self {
            EpochRow::Single => None,
            EpochRow::Node(name) => Some(format!(
                "INSERT INTO cluster_nodes VALUES ('{}', 0, 0, 0) ON CONFLICT (node) DO NOTHING",
                name.replace('\'', "''")
            )),
        }
    }

    /// This node's name, with several nodes.
    pub(super) fn node(&self) -> Option<&str> {
        match self {
            EpochRow::Single => None,
            EpochRow::Node(name) => Some(name),
        }
    }

    pub(super) fn is_node(&self) -> bool {
        matches!(self, EpochRow::Node(_))
    }
}

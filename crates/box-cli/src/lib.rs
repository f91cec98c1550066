//! Box command-line fronts.

"""PostgreSQL's side of the database layer: for each part of Corral whose SQL differs
between backends, a module with PostgreSQL's statements and ways."""

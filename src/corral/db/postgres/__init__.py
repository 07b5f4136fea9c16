"""What the database layer does its own way on PostgreSQL."""

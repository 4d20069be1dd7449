"""Routing: nginx configuration rendered from the database's state."""

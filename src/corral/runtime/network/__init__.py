"""Outbound network for agents: the fetcher, its allow-list and its rate limit."""

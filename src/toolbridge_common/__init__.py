"""What the API, the MCP server and the dev tools share: settings helpers, logging set-up,
single flight and the wire contract. Imports no web framework and none of the three packages
that use it (see docs/architecture.md)."""

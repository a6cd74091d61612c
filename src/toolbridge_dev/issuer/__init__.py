"""DEVELOPMENT ONLY: a local, Auth0-shaped identity provider for the ToolBridge dev stack.

It issues RS256 access tokens with OAuth2 client credentials (``POST /oauth/token``) and
publishes its key (``/.well-known/jwks.json``), so the API and the MCP server run locally
exactly as against Auth0. Anyone who knows a configured client secret gets tokens from it,
and ``toolbridge-dev-issuer mint`` signs tokens for any user: never run it in production.
"""

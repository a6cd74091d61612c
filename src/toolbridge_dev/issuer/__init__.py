"""DEVELOPMENT ONLY: a local, Auth0-shaped OAuth authorization server for the ToolBridge dev
stack.

It issues RS256 access tokens with OAuth2 client credentials and, for users who pick a name
on its login page (no passwords), with the authorization code flow (PKCE S256, dynamic client
registration, Client ID Metadata Documents, rotating refresh tokens); it publishes its key
(``/.well-known/jwks.json``) and RFC 8414 metadata, so the API and the MCP server run locally
exactly as against a real identity provider. Anyone who can reach it signs in as anyone, and
``toolbridge-dev-issuer mint`` signs tokens for any user: never run it in production.
"""

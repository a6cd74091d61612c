"""Development-only tools: the dev identity provider and the local stack supervisor.

Production code never imports this package; ``toolbridge-mcp dev`` loads it when run.
"""

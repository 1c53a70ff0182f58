"""Built-in CLI commands, one module per command group (each imported only when used)."""

"""medprobe's model catalogue: one TOML card per checkpoint under ``cards/``."""

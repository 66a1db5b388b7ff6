"""The SwanSphere network, one module per component of the paper (§3.1–3.3)."""

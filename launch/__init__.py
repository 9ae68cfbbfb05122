"""Launching selfevo on Ray clusters: `ray job submit` helpers and the runtime env."""

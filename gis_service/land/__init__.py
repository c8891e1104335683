"""Rural contracted land (NY/T 2539 register): codes, register, queries, history, map."""

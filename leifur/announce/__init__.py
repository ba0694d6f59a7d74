"""Who announces what: pure decisions shared by the agent and leifurctl. No I/O."""

"""leifurctl, the operator's tool."""

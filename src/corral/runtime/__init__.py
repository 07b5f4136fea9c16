"""The host-side runtime: agents, instances, executions, and the tools they call."""

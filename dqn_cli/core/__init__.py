"""The agent, its networks and its schedules."""

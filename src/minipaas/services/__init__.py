"""Business rules: apps, deployments, lifecycle actions and routes."""

"""Chief-of-Staff side: the Alertmanager webhook receiver that classifies, remediates, verifies and escalates."""

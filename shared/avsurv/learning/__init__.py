"""Learning: the EPG distance, pair labels and losses, the baselines, and training."""

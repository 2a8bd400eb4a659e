"""The training flow: data (datasets) -> batches (epoch plans, on-device augmentation) -> schedules (the
named recipes) -> train (the loop), with ema and checkpoint beside it."""

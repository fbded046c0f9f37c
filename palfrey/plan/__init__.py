"""From a validated Config to running objects: plan (pure), then realize (side effects)."""

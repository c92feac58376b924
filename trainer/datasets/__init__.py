"""Dataset implementations behind `trainer.data` (import the interface from there)."""

"""Transfer learning compared in one table: scratch, linear probe, fine-tuning, scikit-learn probe, boosting."""

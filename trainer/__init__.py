"""Trainer job: rebuilds the sheet-break model from archived rows and evaluates it."""

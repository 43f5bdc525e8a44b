"""Training tasks: what to learn (data, model, loss, validation); ``trainer.py`` runs them."""

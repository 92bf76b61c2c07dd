"""Telling people and machines what happened: signed webhooks (subscriptions, deliveries and their log) and
e-mail when a user's run ends. Events are written in the transaction of what they tell (an outbox), and a worker's
dispatcher sends them once that transaction committed."""

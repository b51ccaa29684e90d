"""The real-time bridge's pure core: stream subscriptions, frames, gaps after reconnects."""

"""The event feed: motion and recording events in order to every follower (bus.py), as
Server-Sent Events over HTTP (routes.py) and as webhook POSTs (webhook.py).
"""

from .bus import HISTORY, Event, EventBus, FeedClosed, Subscription

__all__ = ["HISTORY", "Event", "EventBus", "FeedClosed", "Subscription"]

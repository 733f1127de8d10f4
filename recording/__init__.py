"""Recording of consultations to disk without transcoding.

Not built yet: a later issue adds recorders as consumers of a room's producers.
"""

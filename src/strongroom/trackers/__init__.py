"""Change trackers: which blocks of a source changed since its last recovery point.

A tracker either proves the set of changed blocks (a dirty bitmap whose lineage
reaches back to the parent point, an overlay on top of the parent's image) or
says it cannot, and the backup then compares every block with the parent's
map. A change is never missed silently.
"""

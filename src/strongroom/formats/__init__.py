"""On-disk formats that strongroom parses itself: partition tables today.

Modules here are pure parsers over a read callback or a stream: they never open
files, touch the repository or import a third-party SDK, so that sources and
the restore pipeline can both use them.
"""

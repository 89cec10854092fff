"""Fast implementations of the reference loop (:func:`rnn_xp.loop.run_direction`).

Each module here follows the protocol of :mod:`rnn_xp.seam` (``NAMESPACES``, ``unsupported(call)``,
``run_direction``) and is tested against the reference. The seam imports them on first use.
"""

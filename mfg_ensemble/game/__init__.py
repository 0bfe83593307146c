"""The game layer: one mean field game and its solve.

``problem`` (the validated :class:`Problem`: domain, horizon, noise, costs, m0), ``problem2d``
(:class:`Problem2D`: the game in a room, with obstacles and exits), ``solver``
(:func:`solve`, :class:`SolverOptions`, the fixed-point map G = FP ∘ HJB), ``fixed_point``
(damped Picard and Anderson mixing), ``newton`` (the monotone scheme and Newton–Krylov) and
``coarse`` (the coarse-grid start). Imports only :mod:`mfg_ensemble.kernels`, the schema and
the errors.
"""

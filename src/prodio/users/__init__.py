"""User accounts: the :class:`UserStore` contract, its SQL backend and password hashing."""

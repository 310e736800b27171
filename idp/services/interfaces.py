"""The interfaces domain services are registered under with pyramid_services.

Views ask for a service by interface (``request.find_service(IPasswordService)``)
and never name an implementation, so tests and deployments can swap one in.
Keep one interface per service here, each with every method documented.
"""

from zope.interface import Interface


class IPasswordService(Interface):
    """Hashes and checks passwords, and says whether a new one is acceptable.

    Passwords are Unicode strings of any length. Implementations normalise
    them to NFKC before doing anything else, so the same characters typed on
    different keyboards or input methods give the same password.
    """

    def hash(password):
        """Return a hash of ``password`` (a ``str``) to store.

        The result is a ``str`` and includes its own salt and cost. Every
        call gives a different hash, even for the same password.
        """

    def verify(password, hashed):
        """Return True if ``password`` matches the stored hash ``hashed``.

        The comparison takes constant time. A malformed or unrecognised
        ``hashed`` returns False and never raises.
        """

    def dummy_verify(password):
        """Do the work of :meth:`verify` against a throwaway hash; return None.

        Call it when the user is not found (or cannot sign in for another
        reason), so the response takes as long as a real check. Otherwise
        the timing would show which usernames exist.
        """

    def needs_rehash(hashed):
        """Return True if ``hashed`` should be replaced after a sign-in.

        True when its cost differs from the configured one, or when it
        cannot be read at all. After :meth:`verify` succeeds, store
        ``hash(password)`` in its place.
        """

    def check_policy(password, *, identifiers=()):
        """Return the policy violations of a new ``password``.

        Returns a list of ``PolicyViolation``s, each with a stable ``code``
        and a translatable ``message``. An empty list means the password is
        acceptable. ``identifiers`` are the user's own strings that must not
        appear in the password, for example the identity number, the email
        local part and the parts of the name.
        """

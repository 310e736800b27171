"""The interfaces domain services are registered under with pyramid_services.

Views ask for a service by interface (``request.service(IPasswordService)``)
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

    def check_policy(password, *, identifiers=(), phrase=None):
        """Return the policy violations of a new ``password``.

        Returns a list of ``PolicyViolation``s, each with a stable ``code``
        and a translatable ``message``. An empty list means the password is
        acceptable. ``identifiers`` are the user's own strings that must not
        appear in the password, for example the identity number, the email
        local part and the parts of the name. ``phrase`` is the user's
        security phrase: the sign-in page shows it to anyone who types the
        identity number, so the password must not be it, contain it, be
        part of it, or be its words with only something weak added.
        """

    def check_phrase(phrase, *, password):
        """Return the violations of a new security ``phrase`` (a list).

        The reverse of the phrase rule of :meth:`check_policy`: a phrase is
        refused when ``password``, the user's current password, is it, a
        variant of it, or part of it, since the phrase is shown to anyone
        who types the identity number.
        """


class IOutbox(Interface):
    """Queues email in the current database transaction.

    Nothing is sent here: the delivery worker sends queued mail afterwards,
    so an SMTP outage never fails the request that caused the email, and a
    request that fails leaves no email behind.
    """

    def add(name, *, recipient, locale, context, dedupe_key=None):
        """Render the email template ``name`` and queue it for ``recipient``.

        ``locale`` is the recipient's language, shown first; the other
        language follows. ``context`` is the template's variables. With a
        ``dedupe_key`` already used by a queued or sent message, nothing is
        queued and None is returned; otherwise the outbox row is returned.
        """

    def defer(job, data):
        """Queue work for the delivery worker: the job ``job`` with ``data``.

        For per-user work a request must not do itself, for instance because
        doing it only for some inputs would show in the answer's timing.
        """


class ICaptchaService(Interface):
    """Tells people from programs before an expensive or abusable action.

    ``enabled`` is False when ``captcha.enabled = false``: then
    :meth:`check` always passes and forms show no captcha. ``kind`` is
    ``"image"`` for the self-hosted captcha, else the hosted provider's name;
    ``widget`` (for a provider) holds ``script_url``, ``css_class`` and
    ``site_key`` for the template, and ``csp`` the sources the page's
    Content-Security-Policy must add for it.
    """

    def new_challenge(purpose):
        """Return the token of a challenge for the form ``purpose``.

        The challenge is bound to the request's session and ``purpose``; a
        form shown again in one session gets its live challenge back.
        ``""`` for a provider.
        """

    def image(token):
        """Return the challenge's PNG, or None if unknown, used or expired."""

    def audio(token, locale):
        """Return the challenge spoken in ``locale`` as a WAV, or None."""

    def check(params, client_address=None, *, purpose):
        """Return True if the submitted form ``params`` solve the captcha.

        The first check consumes the challenge whatever the answer, so a
        challenge can be neither replayed nor guessed twice. Missing fields
        are a wrong answer; so are a provider that cannot be reached and a
        challenge issued to another session or for another ``purpose``.
        """


class IUserService(Interface):
    """Creates accounts and handles their temporary passwords."""

    def register(registration):
        """Create the account described by a ``Registration``; return it.

        The new account gets a random temporary password (stored only as a
        hash, expiring, single use), emailed through the outbox. When the
        identity number or email already belongs to an account, nothing is
        created, the owner is sent a notice instead, and None is returned;
        callers show the same page either way.
        """

    def consume_temporary_password(user, password):
        """Return True, and use it up, if ``password`` is ``user``'s live
        temporary password.

        False when it is wrong, expired or already used, or when the user
        has no temporary password; a used password is gone for good and the
        user must then choose a new one.
        """

    def policy_violations(user, password):
        """The ``PolicyViolation``s of ``password`` as ``user``'s new password.

        The password policy, with the user's own identity number, email and
        names, and their security phrase, as what the password must avoid.
        """

    def set_password(user, password, *, how, client_address=None, keep_session=None):
        """Give ``user`` the new ``password``, already checked against the policy.

        Everything a new password entails happens here, whichever page set
        it: the user's other sessions end (every one without
        ``keep_session``, the row of the session the change was made in),
        unused links are voided, the owner is emailed, and the change is
        audited: ``password.reset`` for ``PasswordChange.RESET``, else
        ``password.changed`` with ``how`` in its detail.
        """

    def change_email(user, email, *, by_helpdesk=False):
        """Make the normalised ``email`` ``user``'s address; return the old one.

        The database's unique constraint decides: raises ``EmailTaken``
        (nothing changed) when another account has the address. Voids the
        user's unused links (reset links went to the old address), and
        emails the old address a notice, and the new one too when the
        helpdesk made the change.
        """


class IPasswordResetService(Interface):
    """ "Forgot password": asking for a link, and the steps the link opens.

    ``lifetime`` is how long a link lives once issued (a ``timedelta``).
    """

    def request_link(email, *, client_address):
        """Queue a reset link for the normalised ``email``, whoever has it.

        Looks nothing up: the same work and the same single outbox job for
        every email, registered or not (AUTH-28); the delivery worker finds
        the account and mails the link. Past ``reset.address`` or
        ``reset.email`` nothing is queued and the throttle is audited.
        """

    def find(token):
        """The live link row for ``token`` as the URL carries it, or None."""

    def progress(token_id):
        """``(row, user)`` for the link kept in the session, or None.

        None when the link is unknown, used up or expired, or its user is
        gone or disabled: the flow then starts again.
        """

    def mismatch(row, user, *, client_address):
        """Count a wrong email and identity number given with ``row``.

        Audited, and counted as a failed sign-in of ``user`` too. Returns
        True when this wrong answer used the link up (the fifth).
        """

    def use(row):
        """Use the link ``row`` up; True only for the one request that did.

        Call before anything changes: of two requests racing with one link,
        only one gets True (AUTH-14).
        """

    def reset(user, password, *, client_address):
        """Set the new ``password`` of the link's ``user`` (see ``IUserService``).

        Also lifts a lock from failed sign-ins, and forgets those failures:
        the link, the mailbox and the identity number proved the owner. An
        account disabled by an operator stays disabled.
        """


class IRateLimiter(Interface):
    """Counts attempts per named limiter and key, in storage every node shares.

    A named limiter (``login.identifier``, ``login.address``...) has a limit
    and a window from settings (``ratelimit.<name> = COUNT/SECONDS``). Keys
    are whatever the caller counts by (an identifier, an address); they are
    stored only as keyed hashes. Windows slide: the count weighs the previous
    fixed window by how much of it still overlaps the last ``SECONDS``.
    """

    def hit(name, key):
        """Count one attempt; return the ``Decision`` after counting it.

        ``Decision.allowed`` is False once the count exceeds the limit.
        """

    def check(name, key):
        """Return the ``Decision`` for ``key`` without counting anything."""

    def private_key(name, key):
        """What storage holds for ``key`` under ``name``: an HMAC, never the key."""

    def reset(name, key):
        """Forget the attempts counted for ``key`` (after a success)."""


class IAuditLog(Interface):
    """Appends events to the hash-chained audit log in the current transaction."""

    def record(
        event,
        *,
        subject_user_id=None,
        actor_user_id=None,
        client_address=None,
        detail=None,
    ):
        """Append one event and return its row.

        ``event`` is a dotted name (``login.success``, ``account.locked``);
        ``detail`` a JSON-able dict that must hold no secret and no full
        identity number. Rows can never be updated or deleted.
        """


class ISignInService(Interface):
    """Checks passwords at sign-in, with throttling and lockout."""

    def throttled(identifier, address):
        """True if this identifier is past its failure limit (right passwords too)."""

    def address_limited(address):
        """True if failures from this address or its network are past their limits."""

    def captcha_required(address):
        """True if an attempt from ``address`` must solve the captcha first.

        Site-wide failures running high, or this address or its network past
        its limits: both ask for the captcha rather than refuse (AUTH-30).
        """

    def lock_warning(identifier):
        """A ``LockWarning`` (failures left, next lock's length) when few are left.

        None while more than a few failures remain; the same for a number
        nobody registered as for a registered one.
        """

    def attempt(
        identifier, kind, password, address, user_agent=None, *, captcha_solved=False
    ):
        """Check a password; return an ``Attempt`` (``OK``, ``FAILED``, ``THROTTLED``,
        or ``SECOND_STEP`` when the password is right and a code must follow).

        ``FAILED`` covers every reason (wrong, unknown, locked, disabled,
        expired temporary password) so that callers show one message.
        ``THROTTLED`` is the identifier past its limit, or the address past
        its limits without ``captcha_solved``.
        """

    def second_step(user, kind, code, address, user_agent=None):
        """Check the code asked for after a right password (``SECOND_STEP``).

        ``OK`` finishes the sign-in; a wrong code is ``FAILED`` and counts as
        a wrong password would (lock included); ``THROTTLED`` past the
        identifier's limit, whatever the code.
        """

    def check_code(user, code, address=None):
        """Check a code the signed-in ``user`` gives for a two-step change.

        ``OK`` (used up, failures forgotten), ``FAILED`` (counted as a wrong
        password) or ``THROTTLED`` (this failure reached ``login.identifier``:
        end the browser's session, then :meth:`lock`).
        """

    def reauthenticate(user, password, *, forget_failures=True):
        """Check the signed-in ``user``'s current password before a change.

        ``OK`` when right (the identifier's failures are forgotten);
        ``FAILED`` when wrong, counted against ``login.identifier`` as a
        failed sign-in; ``THROTTLED`` when this failure reached that limit:
        the caller then ends the browser's session and calls :meth:`lock`,
        in that order (``lock`` ends the user's other sessions).
        """

    def lock(user, *, reason, address=None, actor_user_id=None, locks=None):
        """Lock the account for a while, end its sessions and tell the owner.

        Always temporary (longer for each lock of the day); never
        ``disabled_at``, which only an operator sets.
        """


class IModuleRegistry(Interface):
    """Modules and roles, and which role grants which module.

    Every change takes the acting party (an ``Actor``), is audited with it
    in the caller's transaction, and is refused with a ``Refused`` from
    ``idp.services.errors`` (``NotFound``, ``Conflict``, ``Invalid``) that
    leaves nothing written. Codes and names are found whatever their case
    and unique whatever their case.
    """

    # zope.interface declares methods without ``self``; mypy asks for one.
    def modules():  # type: ignore[misc]
        """Every module, by code."""

    def roles():  # type: ignore[misc]
        """Every role, by name."""

    def find_module(code):
        """The module with ``code`` in any case, or ``NotFound``."""

    def find_role(name):
        """The role named ``name`` in any case, or ``NotFound``."""

    def create_module(code, *, name_ms, name_en, actor):
        """Add a module (``module.created``); ``Conflict`` if the code is taken."""

    def create_role(name, *, name_ms, name_en, description=None, actor):
        """Add a role (``role.created``); ``Conflict`` if the name is taken."""

    def rename_module(code, new, *, actor):
        """Change a module's code (``module.renamed``); return the old code."""

    def rename_role(name, new, *, actor):
        """Change a role's name (``role.renamed``); return the old name."""

    def delete_module(code, *, actor):
        """Remove a module (``module.deleted``); return a ``Deleted``.

        ``Conflict`` (``module.in_use``) while a role grants it or an SP
        belongs to it; ``params["uses"]`` names them.
        """

    def delete_role(name, *, actor):
        """Remove a role (``role.deleted``); return a ``Deleted``.

        ``Conflict`` (``role.in_use``) while a user holds it.
        """

    def grant_module(role_name, code, *, actor):
        """Let a role reach a module (``role.module_granted``).

        False, with nothing audited, when it already does.
        """

    def revoke_module(role_name, code, *, actor):
        """Stop a role reaching a module (``role.module_revoked``).

        False, with nothing audited, when it did not.
        """


class IAccountService(Interface):
    """Accounts as administrators manage them (``idp-admin user``, the console).

    Every change takes the acting party (an ``Actor``), is audited with it,
    and is refused with a ``Refused`` from ``idp.services.errors`` that
    leaves nothing written. Users are ``User`` rows the caller found with
    :meth:`find` (or by id).
    """

    def find(identifier):
        """The account of a parsed ``Identifier``, or ``NotFound``."""

    def standing(user):
        """A ``Standing``: an administrator's lock, a lock from wrong
        passwords, a pending temporary password, the last sign-in."""

    def create(registration, *, roles=(), reveal_password=False, actor):
        """Create an account holding the named ``roles`` (``account.created``).

        It gets a temporary password, emailed unless ``reveal_password``;
        returns a ``TemporaryPassword`` (with the password only if
        revealed). ``Conflict`` when the identity number or email is
        registered already; ``NotFound`` for an unknown role.
        """

    def grant_role(user, role_name, *, actor):
        """Give ``user`` the role (``role.granted``); False if they hold it."""

    def revoke_role(user, role_name, *, actor):
        """Take the role (``role.revoked``); False if they did not hold it."""

    def lock(user, *, reason, actor):
        """Lock until :meth:`unlock` (``account.locked``), end every session,
        tell the owner; the number of sessions ended, None if locked already."""

    def unlock(user, *, actor):
        """Lift any lock, forget the sign-in failures (``account.unlocked``);
        True if it was locked."""

    def reset_password(user, *, reveal_password=False, actor):
        """A temporary password in place of the password
        (``password.admin_reset``): sessions end, links die. Returns
        ``(sessions ended, TemporaryPassword)``."""

    def set_email(user, email, *, actor):
        """Correct ``user``'s address (``email.changed``); both addresses told.

        A pending temporary password is replaced and sent to the new
        address. ``Invalid`` for a malformed or unchanged address,
        ``Conflict`` when another account has it. Returns ``EmailCorrected``.
        """

    def update_profile(user, *, actor, **values):
        """Correct name, phone, institution or category
        (``account.profile_changed``); the names of the fields changed."""

    def end_sessions(user, *, actor):
        """End every session of ``user`` (``sessions.ended``); how many."""


class IServiceProviders(Interface):
    """The SP registry as administrators change it (``idp-admin sp``, the console).

    Every change takes the acting party (an ``Actor``), is audited with it,
    raises the registry generation (every node rebuilds its SAML server),
    and is refused with a ``Refused`` from ``idp.services.errors`` that
    leaves nothing written.
    """

    def find(entity_id):
        """The SP registered with exactly ``entity_id``, or ``NotFound``."""

    def import_metadata(
        data,
        *,
        module_code=None,
        disabled=False,
        replace=False,
        confirm_hosts=(),
        actor,
    ):
        """Register an SP from its metadata bytes, or refresh it; an ``Imported``.

        ``Conflict`` (``sp.trust_changed``) for new keys or endpoints without
        ``replace`` (SAML-30), (``sp.host_claimed``) for an endpoint on a
        host another SP uses and not in ``confirm_hosts`` (SAML-29);
        ``Invalid`` (``sp.refused``) for metadata that fails the checks.
        """

    def preview_import(
        data,
        *,
        module_code=None,
        disabled=False,
        replace=False,
        confirm_hosts=(),
        actor,
    ):
        """A ``Preview`` of :meth:`import_metadata`: outcome, trust changes and
        the metadata's diff, worked out by the import itself and rolled back;
        raises what the import would."""

    def set_policy(entity_id, changes, *, actor):
        """Change the keys of ``changes`` in the SP's policy (``sp.policy``)."""

    def approve_change(source_name, entity_id, *, actor):
        """Apply the trust change a source holds for ``entity_id`` (SAML-30),
        audited with the actor; the entity IDs applied."""

    def set_enabled(entity_id, enabled, *, actor):
        """Enable or disable the SP; False when it already was."""

    def removal(entity_id):
        """A ``Removal``: what removing the SP deletes with it, to confirm."""

    def remove(entity_id, *, confirmed=None, actor):
        """Unregister the SP (``sp.removed``); the lines of what went with it.

        ``confirmed``: the ``Removal`` that was confirmed; ``Conflict`` if
        the SP was registered again since.
        """


class ITwoFactorService(Interface):
    """Two-step verification: a TOTP authenticator and single-use recovery codes.

    Every change is audited and mailed to the owner. Codes are strings as
    typed; nothing here throttles (the sign-in service counts wrong codes
    as wrong passwords).
    """

    def enabled(user):
        """True if ``user`` has a confirmed second factor (``has_second_factor``)."""

    def recovery_codes_left(user):
        """How many of ``user``'s recovery codes are still unused."""

    def begin(user):
        """Start enrolment: an ``Enrolment`` (secret, otpauth URI) to show.

        A secret shown within the last hour and not yet confirmed is shown
        again; otherwise a new one replaces it. Raises ``AlreadyOn`` when
        the second factor is already on.
        """

    def pending(user):
        """The ``Enrolment`` waiting for its first code, or None."""

    def confirm(user, code, *, client_address=None):
        """Turn the pending authenticator on if ``code`` is one of its codes.

        Returns the ten new recovery codes, as they are to be shown (once),
        or None when the code is wrong or nothing is pending.
        """

    def verify(user, code):
        """Check an authenticator code or a recovery code typed at sign-in.

        Returns a ``Verdict``: ``TOTP`` (the code's step is now used),
        ``RECOVERY`` (that code is now used, and the owner told), ``WRONG``
        (wrong, already used, or no second factor on).
        """

    def regenerate(user, *, client_address=None):
        """Replace ``user``'s recovery codes with ten new ones; return them."""

    def disable(user, *, how="account", client_address=None, actor_user_id=None):
        """Turn the second factor off (authenticator and codes); True if it was on.

        ``how`` is ``account`` (the owner, having given password and code)
        or ``helpdesk`` (an operator, for an owner who lost both).
        """


class IAdminRoles(Interface):
    """Who holds the admin console's roles (``idp.services.admin``).

    Changes take the acting party (an ``Actor``) and are audited with it;
    refusals are ``Refused`` from ``idp.services.errors``.
    """

    def roles_of(user):
        """The ``AdminRole`` values ``user`` holds, as a frozenset."""

    def holders():  # type: ignore[misc]
        """Every ``(user, [AdminRole, ...])`` holding one, by identity number."""

    def holders_query():  # type: ignore[misc]
        """The users holding one, as a ``SELECT`` for a paginated list."""

    def roles_by_user(user_ids):
        """``{user id: [AdminRole, ...]}`` for the given users."""

    def grant(user, role, *, actor):
        """Give ``user`` an admin role (``admin.granted``); False if held."""

    def revoke(user, role, *, actor):
        """Take an admin role (``admin.revoked``); False if not held.

        ``Conflict`` (``admin.last_superadmin``) for the last superadmin,
        unless from the command line.
        """


class IReports(Interface):
    """What the admin console reads: registry lists, the audit log, the dashboard.

    Read-only; every list takes a ``Listing`` (``idp.services.listing``) and
    returns a ``Page`` counted and cut in SQL.
    """

    def roles(listing):
        """Roles with how many users hold each."""

    def modules(listing):
        """Modules with how many roles grant and SPs belong to each."""

    def role_users(role, listing):
        """``(user, granted_at)`` of each holder of ``role``."""

    def role_reach(role):
        """``(module, SP count)`` of each module ``role`` grants."""

    def service_providers(listing, *, search=None, module=None):
        """SPs with module, source, the source's last fetch, and last SSO;
        ``search`` in the entity ID, ``module`` its code."""

    def sources():  # type: ignore[misc]
        """Every metadata source with its SP, quarantine and pending counts."""

    def quarantine(listing):
        """``(QuarantinedEntity, source name)`` rows."""

    def pending_changes(listing):
        """``(PendingChange, source name)`` rows: trust changes held."""

    def find_user(text):
        """The user named by identity number, email or id; ``NotFound``."""

    def audit_events(filters, listing):
        """Audit events matching an ``AuditFilter``."""

    def audit_export(filters):
        """Every matching audit event, oldest first, streamed."""

    def dashboard(window):
        """A ``Dashboard`` for ``"24h"`` or ``"30d"``."""

    def outbox_status():  # type: ignore[misc]
        """``(unsent, failing, oldest unsent's time or None)``."""


class IMailQueue(Interface):
    """The outbox as administrators see it (never the sealed bodies)."""

    def waiting(state, listing):
        """Unsent messages: ``pending`` (all) or ``failed`` (with an error)."""

    def retry(message_id, *, actor):
        """Make an unsent message due now, audited (``mail.retry``)."""

"""Initial schema: the whole data model

Revision ID: 0001
Revises: 
Create Date: 2026-11-25 08:40:37.777343
"""

from alembic import op
import sqlalchemy as sa
import idp.db


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('audit_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('occurred_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('event', sa.String(length=64), nullable=False),
    sa.Column('actor_user_id', sa.Uuid(), nullable=True),
    sa.Column('subject_user_id', sa.Uuid(), nullable=True),
    sa.Column('client_address', sa.String(length=64), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_events')),
    sa.UniqueConstraint('hash', name=op.f('uq_audit_events_hash'))
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_events_event'), ['event'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_occurred_at'), ['occurred_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_subject_user_id'), ['subject_user_id'], unique=False)

    op.create_table('captcha_challenges',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('answer_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('used_at', idp.db.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_captcha_challenges')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_captcha_challenges_token_hash'))
    )
    with op.batch_alter_table('captcha_challenges', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_captcha_challenges_expires_at'), ['expires_at'], unique=False)

    op.create_table('key_records',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('use', sa.String(length=16), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('cert_pem', sa.Text(), nullable=False),
    sa.Column('key_file', sa.String(length=255), nullable=False),
    sa.Column('not_after', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('published_at', idp.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('activated_at', idp.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('retired_at', idp.db.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_key_records')),
    sa.UniqueConstraint('fingerprint', name=op.f('uq_key_records_fingerprint'))
    )
    op.create_table('mail_outbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('template', sa.String(length=64), nullable=False),
    sa.Column('recipient', sa.String(length=254), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('created_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('next_attempt_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('sent_at', idp.db.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mail_outbox'))
    )
    with op.batch_alter_table('mail_outbox', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mail_outbox_next_attempt_at'), ['next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_mail_outbox_sent_at'), ['sent_at'], unique=False)

    op.create_table('modules',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('display_name_ms', sa.String(length=200), nullable=False),
    sa.Column('display_name_en', sa.String(length=200), nullable=False),
    sa.Column('created_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_modules')),
    sa.UniqueConstraint('code', name=op.f('uq_modules_code'))
    )
    op.create_table('roles',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('display_name_ms', sa.String(length=200), nullable=False),
    sa.Column('display_name_en', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('created_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_roles')),
    sa.UniqueConstraint('name', name=op.f('uq_roles_name'))
    )
    op.create_table('seen_request_ids',
    sa.Column('issuer', sa.String(length=1024), nullable=False),
    sa.Column('request_id', sa.String(length=256), nullable=False),
    sa.Column('expires_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('issuer', 'request_id', name=op.f('pk_seen_request_ids'))
    )
    with op.batch_alter_table('seen_request_ids', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_seen_request_ids_expires_at'), ['expires_at'], unique=False)

    op.create_table('sp_registry_state',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('changed_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sp_registry_state'))
    )
    op.create_table('throttle_counters',
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('window_start', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('expires_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', 'window_start', name=op.f('pk_throttle_counters'))
    )
    with op.batch_alter_table('throttle_counters', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_throttle_counters_expires_at'), ['expires_at'], unique=False)

    op.create_table('users',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('identifier_kind', sa.String(length=16), nullable=False),
    sa.Column('identifier', sa.String(length=40), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('full_name', sa.String(length=200), nullable=False),
    sa.Column('phone', sa.String(length=20), nullable=True),
    sa.Column('category', sa.String(length=32), nullable=False),
    sa.Column('institution', sa.String(length=200), nullable=True),
    sa.Column('locale', sa.String(length=5), nullable=False),
    sa.Column('security_image', sa.String(length=64), nullable=True),
    sa.Column('security_phrase', sa.String(length=80), nullable=True),
    sa.Column('password_hash', sa.String(length=100), nullable=True),
    sa.Column('password_changed_at', idp.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('must_change_password', sa.Boolean(), nullable=False),
    sa.Column('temp_password_expires_at', idp.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('failed_logins', sa.Integer(), nullable=False),
    sa.Column('locked_until', idp.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('disabled_at', idp.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("identifier_kind IN ('mykad', 'passport')", name=op.f('ck_users_identifier_kind')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('email', name=op.f('uq_users_email')),
    sa.UniqueConstraint('identifier', name=op.f('uq_users_identifier'))
    )
    op.create_table('idp_sessions',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=True),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('authn_method', sa.String(length=256), nullable=True),
    sa.Column('authn_at', idp.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('client_address', sa.String(length=64), nullable=True),
    sa.Column('user_agent', sa.String(length=512), nullable=True),
    sa.Column('created_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_idp_sessions_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_idp_sessions')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_idp_sessions_token_hash'))
    )
    with op.batch_alter_table('idp_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_idp_sessions_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_idp_sessions_user_id'), ['user_id'], unique=False)

    op.create_table('one_time_tokens',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('used_at', idp.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_one_time_tokens_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_one_time_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_one_time_tokens_token_hash'))
    )
    with op.batch_alter_table('one_time_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_one_time_tokens_user_id'), ['user_id'], unique=False)

    op.create_table('role_modules',
    sa.Column('role_id', sa.Integer(), nullable=False),
    sa.Column('module_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['module_id'], ['modules.id'], name=op.f('fk_role_modules_module_id_modules'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['role_id'], ['roles.id'], name=op.f('fk_role_modules_role_id_roles'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('role_id', 'module_id', name=op.f('pk_role_modules'))
    )
    op.create_table('service_providers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('entity_id', sa.String(length=1024), nullable=False),
    sa.Column('module_id', sa.Integer(), nullable=True),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('metadata_xml', sa.Text(), nullable=False),
    sa.Column('metadata_sha256', sa.String(length=64), nullable=False),
    sa.Column('metadata_valid_until', idp.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('name_id_format', sa.String(length=256), nullable=False),
    sa.Column('attributes_released', sa.JSON(), nullable=False),
    sa.Column('sign_response', sa.Boolean(), nullable=False),
    sa.Column('sign_assertion', sa.Boolean(), nullable=False),
    sa.Column('encrypt_assertion', sa.Boolean(), nullable=False),
    sa.Column('allow_sha1', sa.Boolean(), nullable=False),
    sa.Column('required_authn_context', sa.String(length=256), nullable=True),
    sa.Column('clock_skew', sa.Integer(), nullable=True),
    sa.Column('relay_state_max', sa.Integer(), nullable=True),
    sa.Column('created_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['module_id'], ['modules.id'], name=op.f('fk_service_providers_module_id_modules'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_service_providers')),
    sa.UniqueConstraint('entity_id', name=op.f('uq_service_providers_entity_id'))
    )
    op.create_table('user_roles',
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('role_id', sa.Integer(), nullable=False),
    sa.Column('granted_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['role_id'], ['roles.id'], name=op.f('fk_user_roles_role_id_roles'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_user_roles_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'role_id', name=op.f('pk_user_roles'))
    )
    op.create_table('pending_saml_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('sp_id', sa.Integer(), nullable=False),
    sa.Column('binding', sa.String(length=128), nullable=False),
    sa.Column('request_xml', sa.Text(), nullable=False),
    sa.Column('relay_state', sa.Text(), nullable=True),
    sa.Column('created_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('consumed_at', idp.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['sp_id'], ['service_providers.id'], name=op.f('fk_pending_saml_requests_sp_id_service_providers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pending_saml_requests')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_pending_saml_requests_token_hash'))
    )
    with op.batch_alter_table('pending_saml_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pending_saml_requests_expires_at'), ['expires_at'], unique=False)

    op.create_table('persistent_name_ids',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Uuid(), nullable=False),
    sa.Column('sp_id', sa.Integer(), nullable=False),
    sa.Column('name_id', sa.String(length=64), nullable=False),
    sa.Column('created_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['sp_id'], ['service_providers.id'], name=op.f('fk_persistent_name_ids_sp_id_service_providers'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_persistent_name_ids_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_persistent_name_ids')),
    sa.UniqueConstraint('name_id', name=op.f('uq_persistent_name_ids_name_id')),
    sa.UniqueConstraint('user_id', 'sp_id', name=op.f('uq_persistent_name_ids_user_id'))
    )
    with op.batch_alter_table('persistent_name_ids', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_persistent_name_ids_sp_id'), ['sp_id'], unique=False)

    op.create_table('session_participants',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('session_id', sa.Uuid(), nullable=False),
    sa.Column('sp_id', sa.Integer(), nullable=False),
    sa.Column('name_id', sa.String(length=256), nullable=False),
    sa.Column('name_id_format', sa.String(length=256), nullable=False),
    sa.Column('session_index', sa.String(length=64), nullable=False),
    sa.Column('created_at', idp.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['session_id'], ['idp_sessions.id'], name=op.f('fk_session_participants_session_id_idp_sessions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['sp_id'], ['service_providers.id'], name=op.f('fk_session_participants_sp_id_service_providers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_session_participants'))
    )
    with op.batch_alter_table('session_participants', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_session_participants_session_id'), ['session_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_session_participants_sp_id'), ['sp_id'], unique=False)



def downgrade():
    with op.batch_alter_table('session_participants', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_session_participants_sp_id'))
        batch_op.drop_index(batch_op.f('ix_session_participants_session_id'))

    op.drop_table('session_participants')
    with op.batch_alter_table('persistent_name_ids', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_persistent_name_ids_sp_id'))

    op.drop_table('persistent_name_ids')
    with op.batch_alter_table('pending_saml_requests', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pending_saml_requests_expires_at'))

    op.drop_table('pending_saml_requests')
    op.drop_table('user_roles')
    op.drop_table('service_providers')
    op.drop_table('role_modules')
    with op.batch_alter_table('one_time_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_one_time_tokens_user_id'))

    op.drop_table('one_time_tokens')
    with op.batch_alter_table('idp_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_idp_sessions_user_id'))
        batch_op.drop_index(batch_op.f('ix_idp_sessions_expires_at'))

    op.drop_table('idp_sessions')
    op.drop_table('users')
    with op.batch_alter_table('throttle_counters', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_throttle_counters_expires_at'))

    op.drop_table('throttle_counters')
    op.drop_table('sp_registry_state')
    with op.batch_alter_table('seen_request_ids', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_seen_request_ids_expires_at'))

    op.drop_table('seen_request_ids')
    op.drop_table('roles')
    op.drop_table('modules')
    with op.batch_alter_table('mail_outbox', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_mail_outbox_sent_at'))
        batch_op.drop_index(batch_op.f('ix_mail_outbox_next_attempt_at'))

    op.drop_table('mail_outbox')
    op.drop_table('key_records')
    with op.batch_alter_table('captcha_challenges', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_captcha_challenges_expires_at'))

    op.drop_table('captcha_challenges')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_events_subject_user_id'))
        batch_op.drop_index(batch_op.f('ix_audit_events_occurred_at'))
        batch_op.drop_index(batch_op.f('ix_audit_events_event'))

    op.drop_table('audit_events')

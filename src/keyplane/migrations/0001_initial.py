from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from keyplane.models.api_key import _api_key_id
from keyplane.models.member import _invitation_id, _member_id
from keyplane.models.project import _environment_id, _project_id
from keyplane.models.user import _identity_id, _session_id, _user_id
from keyplane.permissions.scopes import Role
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name='User',
            fields=[
                ('id', fields.CharField(primary_key=True, default=_user_id, unique=True, db_index=True, max_length=32)),
                ('email', fields.CharField(unique=True, max_length=254)),
                ('name', fields.CharField(max_length=64)),
                ('password_hash', fields.CharField(max_length=255)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'user', 'app': 'keyplane', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='OAuthIdentity',
            fields=[
                ('id', fields.CharField(primary_key=True, default=_identity_id, unique=True, db_index=True, max_length=32)),
                ('issuer', fields.CharField(max_length=255)),
                ('subject', fields.CharField(max_length=255)),
                ('user', fields.ForeignKeyField('keyplane.User', source_field='user_id', db_constraint=True, to_field='id', related_name='oauth_identities', on_delete=OnDelete.CASCADE)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'oauth_identity', 'app': 'keyplane', 'unique_together': (('issuer', 'subject'),), 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Project',
            fields=[
                ('id', fields.CharField(primary_key=True, default=_project_id, unique=True, db_index=True, max_length=32)),
                ('name', fields.CharField(max_length=64)),
                ('created_by', fields.ForeignKeyField('keyplane.User', source_field='created_by_id', db_constraint=True, to_field='id', related_name='created_projects', on_delete=OnDelete.RESTRICT)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'project', 'app': 'keyplane', 'unique_together': (('created_by', 'name'),), 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Environment',
            fields=[
                ('id', fields.CharField(primary_key=True, default=_environment_id, unique=True, db_index=True, max_length=32)),
                ('project', fields.ForeignKeyField('keyplane.Project', source_field='project_id', db_constraint=True, to_field='id', related_name='environments', on_delete=OnDelete.CASCADE)),
                ('name', fields.CharField(max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'environment', 'app': 'keyplane', 'unique_together': (('project', 'name'),), 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='ApiKey',
            fields=[
                ('id', fields.CharField(primary_key=True, default=_api_key_id, unique=True, db_index=True, max_length=32)),
                ('environment', fields.ForeignKeyField('keyplane.Environment', source_field='environment_id', db_constraint=True, to_field='id', related_name='api_keys', on_delete=OnDelete.CASCADE)),
                ('project', fields.ForeignKeyField('keyplane.Project', source_field='project_id', db_constraint=True, to_field='id', related_name='api_keys', on_delete=OnDelete.CASCADE)),
                ('name', fields.CharField(max_length=64)),
                ('prefix', fields.CharField(max_length=16)),
                ('secret_hash', fields.CharField(unique=True, max_length=64)),
                ('scopes', fields.CharField(max_length=128)),
                ('created_by', fields.ForeignKeyField('keyplane.User', source_field='created_by_id', db_constraint=True, to_field='id', related_name='created_api_keys', on_delete=OnDelete.RESTRICT)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('expires_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('revoked_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('last_used_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('total_requests', fields.BigIntField(default=0)),
            ],
            options={'table': 'api_key', 'app': 'keyplane', 'indexes': [Index(fields=['environment_id', 'created_at'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Invitation',
            fields=[
                ('id', fields.CharField(primary_key=True, default=_invitation_id, unique=True, db_index=True, max_length=32)),
                ('project', fields.ForeignKeyField('keyplane.Project', source_field='project_id', db_constraint=True, to_field='id', related_name='invitations', on_delete=OnDelete.CASCADE)),
                ('email', fields.CharField(db_index=True, max_length=254)),
                ('role', fields.CharEnumField(description='OWNER: OWNER\nADMIN: ADMIN\nDEVELOPER: DEVELOPER\nVIEWER: VIEWER', enum_type=Role, max_length=16)),
                ('environment_ids', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('token_hash', fields.CharField(unique=True, max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('expires_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('accepted_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'invitation', 'app': 'keyplane', 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Member',
            fields=[
                ('id', fields.CharField(primary_key=True, default=_member_id, unique=True, db_index=True, max_length=32)),
                ('project', fields.ForeignKeyField('keyplane.Project', source_field='project_id', db_constraint=True, to_field='id', related_name='members', on_delete=OnDelete.CASCADE)),
                ('user', fields.ForeignKeyField('keyplane.User', source_field='user_id', db_constraint=True, to_field='id', related_name='memberships', on_delete=OnDelete.CASCADE)),
                ('role', fields.CharEnumField(description='OWNER: OWNER\nADMIN: ADMIN\nDEVELOPER: DEVELOPER\nVIEWER: VIEWER', enum_type=Role, max_length=16)),
                ('all_environments', fields.BooleanField(default=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'member', 'app': 'keyplane', 'unique_together': (('project', 'user'),), 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='MemberEnvironment',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('member', fields.ForeignKeyField('keyplane.Member', source_field='member_id', db_constraint=True, to_field='id', related_name='environment_grants', on_delete=OnDelete.CASCADE)),
                ('environment', fields.ForeignKeyField('keyplane.Environment', source_field='environment_id', db_constraint=True, to_field='id', related_name='member_grants', on_delete=OnDelete.CASCADE)),
            ],
            options={'table': 'member_environment', 'app': 'keyplane', 'unique_together': (('member', 'environment'),), 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Session',
            fields=[
                ('id', fields.CharField(primary_key=True, default=_session_id, unique=True, db_index=True, max_length=32)),
                ('user', fields.ForeignKeyField('keyplane.User', source_field='user_id', db_constraint=True, to_field='id', related_name='sessions', on_delete=OnDelete.CASCADE)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('expires_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('ended_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'session', 'app': 'keyplane', 'pk_attr': 'id'},
            bases=['Model'],
        ),
    ]

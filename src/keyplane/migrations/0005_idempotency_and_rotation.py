from tortoise import migrations
from tortoise.migrations import operations as ops
from keyplane.models.idempotency import _idempotency_id
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('keyplane', '0004_login_lockout')]

    initial = False

    operations = [
        ops.CreateModel(
            name='IdempotentRequest',
            fields=[
                ('id', fields.CharField(primary_key=True, default=_idempotency_id, unique=True, db_index=True, max_length=32)),
                ('principal_kind', fields.CharField(max_length=16)),
                ('principal_id', fields.CharField(max_length=32)),
                ('operation', fields.CharField(max_length=32)),
                ('key', fields.CharField(max_length=255)),
                ('request_hash', fields.CharField(max_length=64)),
                ('result_id', fields.CharField(null=True, max_length=32)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'idempotency', 'app': 'keyplane', 'unique_together': (('principal_kind', 'principal_id', 'operation', 'key'),), 'indexes': [Index(fields=['created_at'])], 'pk_attr': 'id'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='ApiKey',
            name='rotated_from',
            field=fields.OneToOneField('keyplane.ApiKey', source_field='rotated_from_id', null=True, db_constraint=True, to_field='id', related_name='replaced_by', on_delete=OnDelete.SET_NULL),
        ),
    ]

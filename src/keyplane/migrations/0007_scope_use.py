from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('keyplane', '0006_key_restrictions_and_policy')]

    initial = False

    operations = [
        ops.CreateModel(
            name='ApiKeyScopeUse',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('key', fields.ForeignKeyField('keyplane.ApiKey', source_field='key_id', db_constraint=True, to_field='id', related_name='scope_uses', on_delete=OnDelete.CASCADE)),
                ('scope', fields.CharField(max_length=64)),
                ('last_used_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'api_key_scope_use', 'app': 'keyplane', 'unique_together': (('key_id', 'scope'),), 'pk_attr': 'id', 'table_description': 'When a key last used each scope: the scope that admitted a field (`Access.require`),'},
            bases=['Model'],
        ),
    ]

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("shop", "0001_initial"), ("auth", "0001_initial")]
    operations = [
        migrations.CreateModel(
            name="ApiToken",
            fields=[
                ("id", models.AutoField(primary_key=True, serialize=False)),
                ("key", models.CharField(max_length=40, unique=True)),
                ("user", models.ForeignKey(on_delete=models.deletion.CASCADE, to="auth.user")),
            ],
        ),
    ]

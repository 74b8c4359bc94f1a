# project/instance-id/backup-id
terraform import cp_backup.before_upgrade acme/01939d3e-8c4f-7b7a-9a52-6f1d1c0e5a10/01939d41-2c3d-7e4f-9051-6a7b8c9d0e1f

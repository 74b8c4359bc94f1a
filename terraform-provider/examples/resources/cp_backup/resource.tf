# A backup now; apply returns once its artifact is in the object store.
resource "cp_backup" "before_upgrade" {
  instance_id = cp_instance.orders.id
}

# A new instance that starts from it (restore is a provision argument, not a resource).
resource "cp_instance" "orders_copy" {
  name    = "orders-copy"
  service = cp_instance.orders.service
  version = cp_instance.orders.version
  plan    = "starter"
  restore_from = {
    backup_id = cp_backup.before_upgrade.id
  }
}

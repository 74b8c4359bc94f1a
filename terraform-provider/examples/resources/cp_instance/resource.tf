resource "cp_instance" "orders" {
  name    = "orders-db"
  service = "postgresql"
  version = "16" # an upgrade ("17") is an in-place update
  plan    = "starter"

  config = {
    max_connections = 200
    track_io_timing = true
  }

  # A set: the order written here never matters.
  acl = [
    { cidr = "203.0.113.0/24", description = "office" },
    { cidr = "2001:db8::/32" },
  ]

  deletion_protection = false

  timeouts {
    create = "30m"
    update = "30m"
    delete = "20m"
  }
}

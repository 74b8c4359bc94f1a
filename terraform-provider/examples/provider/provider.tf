terraform {
  required_providers {
    cp = {
      source = "example/cp"
    }
  }
}

# The token comes from the environment only: export CP_TOKEN=$(cat .local/api-token)
provider "cp" {
  endpoint = "http://127.0.0.1:8080" # or CP_ENDPOINT
  project  = "acme"                  # or CP_PROJECT
}

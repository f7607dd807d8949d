//! Prints the NetworkAttachmentDefinition CRD YAML; its output is checked in as crds/crd.yaml.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    print!("{}", plexus_crds::crd_yaml()?);
    Ok(())
}

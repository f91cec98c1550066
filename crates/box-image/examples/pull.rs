//! `pull REFERENCE DATA_DIR [--platform os/arch] [--tls-verify=false]`: pulls an image into a
//! store at DATA_DIR and prints its id (used by bench/pull.sh until the CLI has `box pull`).

use box_image::image::ImageStore;
use box_image::reference::Reference;
use box_image::registry::{BlockingRegistryClient, NoProgress, Platform, RegistryOptions};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut positional = Vec::new();
    let mut platform = Platform::host();
    let mut options = RegistryOptions::default();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--platform" if i + 1 < args.len() => {
                i += 1;
                platform = match args[i].parse() {
                    Ok(p) => p,
                    Err(e) => fail(&e.to_string()),
                };
            }
            "--tls-verify=false" => options.tls_verify = false,
            a => positional.push(a.to_string()),
        }
        i += 1;
    }
    let [reference, data] = positional.as_slice() else {
        fail("usage: pull REFERENCE DATA_DIR [--platform os/arch[/variant]] [--tls-verify=false]");
    };
    let run = || -> box_image::error::Result<String> {
        let reference = Reference::parse(reference)?;
        let store = ImageStore::open(std::path::Path::new(data), !nix::unistd::geteuid().is_root())?;
        let client = BlockingRegistryClient::new(options)?;
        Ok(client.pull(&reference, &platform, &store, &NoProgress)?.id.to_string())
    };
    match run() {
        Ok(id) => println!("{id}"),
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("pull: {msg}");
    std::process::exit(1)
}

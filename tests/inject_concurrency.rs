//! Concurrent writers: several `bootkmod inject` runs started at once on one image, in
//! place, each with another driver. Each appends to the image it read and renames; without
//! serialization the last rename would drop the others' drivers. All must end up in the
//! image, and kmod's `modprobe` must resolve each through the final indexes.

mod common;

use common::inject::base_image;
use common::{bootkmod, run, tool};
use std::process::{Command, Stdio};

#[test]
fn concurrent_injections_into_one_image_all_land() {
    let Some(release) = common::installed_kernel() else { return };
    let Some(modprobe) = tool("modprobe") else { return };
    let Some((tmp, image)) = base_image(&release, &["ext4"], "/dev/sda", "zstd") else {
        return;
    };
    let drivers = ["megaraid_sas", "vmw_pvscsi", "mpt3sas", "virtio_scsi"];
    let children: Vec<_> = drivers
        .iter()
        .map(|d| {
            bootkmod()
                .args(["inject", "--image"])
                .arg(&image)
                .arg(d)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (d, child) in drivers.iter().zip(children) {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{d}: {}", String::from_utf8_lossy(&out.stderr));
    }

    let root = tmp.path().join("extracted");
    let out = run(bootkmod().args(["initramfs", "extract"]).arg(&image).arg(&root));
    assert!(out.status.success(), "extract: {}", String::from_utf8_lossy(&out.stderr));
    for d in drivers {
        let out = run(Command::new(&modprobe).arg("-d").arg(&root).args([
            "-S",
            &release,
            "--show-depends",
            d,
        ]));
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{d} lost from the image: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(shown.contains(&format!("/{d}.ko")), "{d}: {shown}");
    }
}

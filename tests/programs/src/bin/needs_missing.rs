//! A command that imports an interface no lockfile host provides, so hosts
//! must refuse it by name before it runs.

mod bindings {
    wit_bindgen::generate!({
        inline: "
            package test:missing;
            interface gadget { poke: func(); }
            world needs-gadget { import gadget; }
        ",
    });
}

fn main() {
    bindings::test::missing::gadget::poke();
}

//! `box-supervisor`: the lean image of a box's supervisor (see crate box-supervisor). `box`
//! executes it once a box has started; it is not meant to be run by hand.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    box_supervisor::lean::main(&args)
}

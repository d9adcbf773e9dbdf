"""A network of 6,562 parameters to train with mnist20k, and to copy and make your own:

    mnist20k summary --model examples/small_net.py:Net
    mnist20k train   --model examples/small_net.py:Net --epochs 15

All mnist20k asks of this file: a class (or a function) that builds an nn.Module when called with the
keyword arguments given by `--arg NAME=VALUE` (this one takes none), whose forward()
takes a batch of normalized images, (B, 1, 28, 28), and returns one score per digit, (B, 10): logits or
log-probabilities, either works. The file may import anything, a module of your own beside it included.
"""

from torch import nn


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 convolution without padding -> BatchNorm -> ReLU: the image shrinks by 2 pixels a side pair.
    No conv bias: the BatchNorm after it adds its own."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel_size=3, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(  # sizes for a 28x28 input; r: receptive field in pixels
            conv_block(1, 8),  # 26x26, r 3
            conv_block(8, 12),  # 24x24, r 5
            nn.MaxPool2d(2),  # 12x12, r 6: each position now steps 2 input pixels
            conv_block(12, 12),  # 10x10, r 10
            conv_block(12, 16),  # 8x8, r 14
            conv_block(16, 16),  # 6x6, r 18: a digit's strokes fit in a few positions' view
        )
        # Global average pooling: one number per channel, whatever the image size, then a small linear
        # layer. Cheaper than flattening 16x6x6 values into a fully connected layer (5,770 parameters).
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x):
        return self.head(self.features(x))  # logits: mnist20k's loss and scoring take log_softmax
